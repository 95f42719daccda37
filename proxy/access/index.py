"""In-memory index of active grants, so the hot path never makes a database round trip.

The index is an immutable snapshot swapped whole on refresh: readers never see a half-built index and
need no lock. A lookup costs the same whether the store holds 10 or 100 000 grants, and whether the caller
holds one grant on a bucket or thousands (one prefix per dataset shard, say): only the grants whose prefix
the key starts with are ever looked at.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from proxy.access.decide import Decision, authorize, lasting
from proxy.access.grants import Grant, Scope, Target

_EMPTY: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class BucketGrants:
    """One principal's grants on one bucket."""

    by_prefix: dict[str, tuple[Grant, ...]]
    # The distinct prefix lengths, ascending: a key is matched with one dict lookup per length, however
    # many grants share each length.
    lengths: tuple[int, ...]
    prefixes: tuple[str, ...]  # sorted, so the prefixes below a "directory" are one contiguous run
    by_lasting: tuple[Grant, ...]  # longest-lasting first: a bucket-scoped target takes the first active

    @classmethod
    def build(cls, grants: Iterable[Grant]) -> BucketGrants:
        by_prefix: dict[str, list[Grant]] = defaultdict(list)
        for grant in grants:
            by_prefix[grant.prefix].append(grant)
        everything = [g for gs in by_prefix.values() for g in gs]
        return cls(
            by_prefix={p: tuple(gs) for p, gs in by_prefix.items()},
            lengths=tuple(sorted({len(p) for p in by_prefix})),
            prefixes=tuple(sorted(by_prefix)),
            by_lasting=tuple(sorted(everything, key=lasting, reverse=True)),
        )

    def candidates(self, target: Target, now: datetime) -> Iterator[Grant]:
        """The grants that could cover `target`: a superset of those that do, never all of them."""
        if target.scope is Scope.BUCKET:
            # Any active grant covers bucket metadata; `authorize` names the longest-lasting one, which
            # is the first active one in this order.
            yield from _first_active(self.by_lasting, now)
            return
        key = target.key
        for length in self.lengths:
            if length > len(key):
                break
            yield from self.by_prefix.get(key[:length], _EMPTY)

    def any_active_below(self, prefix: str, now: datetime) -> bool:
        start = bisect_left(self.prefixes, prefix)
        for grant_prefix in self.prefixes[start:]:
            if not grant_prefix.startswith(prefix):
                return False
            if any(g.is_active(now) for g in self.by_prefix[grant_prefix]):
                return True
        return False

    def __iter__(self) -> Iterator[Grant]:
        return iter(self.by_lasting)

    def __len__(self) -> int:
        return len(self.by_lasting)


def _first_active(grants: Iterable[Grant], now: datetime) -> Iterator[Grant]:
    for grant in grants:
        if grant.is_active(now):
            yield grant
            return


_NO_BUCKETS: dict[str, BucketGrants] = {}


@dataclass(frozen=True)
class GrantIndex:
    """principal -> bucket -> that principal's grants on that bucket."""

    by_principal: dict[str, dict[str, BucketGrants]] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def build(cls, grants: Iterable[Grant], version: int = 0) -> GrantIndex:
        nested: dict[str, dict[str, list[Grant]]] = defaultdict(lambda: defaultdict(list))
        for grant in grants:
            nested[grant.principal][grant.bucket].append(grant)
        built = {p: {b: BucketGrants.build(gs) for b, gs in buckets.items()} for p, buckets in nested.items()}
        return cls(built, version)

    def grants_for(self, principal: str, buckets: Iterable[str]) -> list[Grant]:
        """Every grant `principal` holds on `buckets` (for inspection; decisions use `decide`)."""
        per_bucket = self.by_principal.get(principal, _NO_BUCKETS)
        return [g for bucket in dict.fromkeys(buckets) if bucket in per_bucket for g in per_bucket[bucket]]

    def decide(self, principal: str, targets: list[Target], now: datetime) -> Decision:
        per_bucket = self.by_principal.get(principal, _NO_BUCKETS)
        candidates: dict[int, Grant] = {}  # by identity: one grant may be a candidate for several targets
        for target in targets:
            if (grants := per_bucket.get(target.bucket)) is not None:
                candidates.update((id(g), g) for g in grants.candidates(target, now))
        return authorize(targets, candidates.values(), now)

    def has_grant_below(self, principal: str, bucket: str, prefix: str, now: datetime) -> bool:
        """Whether an active grant covers something under `prefix` (a "directory" the caller may probe)."""
        grants = self.by_principal.get(principal, _NO_BUCKETS).get(bucket)
        return grants is not None and grants.any_active_below(prefix, now)

    def __len__(self) -> int:
        return sum(len(grants) for buckets in self.by_principal.values() for grants in buckets.values())
