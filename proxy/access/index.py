"""In-memory index of active grants, so the hot path never makes a database round trip.

The index is an immutable snapshot swapped whole on refresh: readers never see a half-built index and
need no lock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from proxy.access.decide import Decision, authorize
from proxy.access.grants import Grant, Target

_EMPTY: tuple[Grant, ...] = ()


@dataclass(frozen=True)
class GrantIndex:
    """principal -> bucket -> grants; a lookup costs the same with 10 or 100 000 grants in the store."""

    by_principal: dict[str, dict[str, tuple[Grant, ...]]] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def build(cls, grants: Iterable[Grant], version: int = 0) -> GrantIndex:
        nested: dict[str, dict[str, list[Grant]]] = defaultdict(lambda: defaultdict(list))
        for grant in grants:
            nested[grant.principal][grant.bucket].append(grant)
        frozen = {p: {b: tuple(gs) for b, gs in buckets.items()} for p, buckets in nested.items()}
        return cls(frozen, version)

    def grants_for(self, principal: str, buckets: Iterable[str]) -> list[Grant]:
        per_bucket = self.by_principal.get(principal)
        if not per_bucket:
            return []
        found: list[Grant] = []
        for bucket in dict.fromkeys(buckets):
            found.extend(per_bucket.get(bucket, _EMPTY))
        return found

    def decide(self, principal: str, targets: list[Target], now: datetime) -> Decision:
        return authorize(targets, self.grants_for(principal, (t.bucket for t in targets)), now)

    def has_grant_below(self, principal: str, bucket: str, prefix: str, now: datetime) -> bool:
        """Whether an active grant covers something under `prefix` (a "directory" the caller may probe)."""
        return any(
            g.is_active(now) and g.prefix.startswith(prefix)
            for g in self.by_principal.get(principal, {}).get(bucket, _EMPTY)
        )

    def __len__(self) -> int:
        return sum(len(gs) for buckets in self.by_principal.values() for gs in buckets.values())
