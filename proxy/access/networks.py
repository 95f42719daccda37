"""Where a grant may be used from: the source networks of the policy resource that contains it (pure)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from proxy.access.grants import Grant
from proxy.access.policy import Policy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkRules:
    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._by_resource = {
            name: tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
            for name, cidrs in policy.allowed_networks().items()
        }
        # Grants are immutable and their (bucket, prefix) pairs few: remember each answer.
        self._networks_for = lru_cache(maxsize=65536)(self._lookup)

    def _lookup(self, bucket: str, prefix: str) -> tuple[Network, ...]:
        match = self._policy.match(bucket, prefix)
        return self._by_resource.get(match[0].name, ()) if match else ()

    def allows(self, grant: Grant, source: str) -> bool:
        """True when the grant's resource sets no networks, or `source` lies in one of them."""
        networks = self._networks_for(grant.bucket, grant.prefix)
        if not networks:
            return True
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False  # an unparseable source cannot be shown to be inside: fail closed
        return any(address in network for network in networks)
