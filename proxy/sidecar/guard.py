"""What the sidecar's loopback listener refuses before re-signing anything (pure).

Loopback is not a boundary against a browser on the same host: a page may send cross-site requests to
127.0.0.1, or rebind its own DNS name to it, and an SSRF in the job reaches it too. So only requests
naming the sidecar's own address in Host are served, anything a browser marks as its own (Origin,
Sec-Fetch-*) is refused, and CORS headers never reach the caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

# Browsers send these on cross-site and same-site fetches alike; S3 SDKs and CLIs never do.
BROWSER_HEADERS = ("origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user")
CORS_PREFIX = "access-control-"


def own_hosts(listen_host: str, port: int) -> frozenset[str]:
    """The Host values that name this listener: its address, and the loopback names for it."""
    names = {listen_host, "localhost"}
    try:
        address = ipaddress.ip_address(listen_host.strip("[]"))
    except ValueError:
        names |= {"127.0.0.1", "::1"}  # "localhost" resolves to either
    else:
        names.add(str(address))
    hosts = {f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names}
    if port == 80:  # clients leave the default port out
        hosts |= {f"[{n}]" if ":" in n else n for n in names}
    return frozenset(h.lower() for h in hosts)


def refusal(headers: Mapping[str, str], hosts: frozenset[str]) -> str | None:
    """Why the request must not be re-signed, or None."""
    host = headers.get("Host", "").strip().lower()
    if host not in hosts:
        return "the GrantGate sidecar answers only requests addressed to its own address (Host)"
    if any(name in headers for name in BROWSER_HEADERS):
        return "the GrantGate sidecar refuses requests from a web browser"
    return None


def without_cors(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The answer's headers minus CORS ones: no page may be allowed to read what the pod can."""
    return [(name, value) for name, value in headers if not name.lower().startswith(CORS_PREFIX)]
