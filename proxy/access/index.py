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
from itertools import islice

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
        return cls(
            by_prefix={p: tuple(gs) for p, gs in by_prefix.items()},
            lengths=tuple(sorted({len(p) for p in by_prefix})),
            prefixes=tuple(sorted(by_prefix)),
            by_lasting=tuple(sorted((g for gs in by_prefix.values() for g in gs), key=lasting, reverse=True)),
        )

    def candidates(self, target: Target, now: datetime) -> Iterator[Grant]:
        """The grants that could cover `target`: a superset of those that do, never all of them."""
        if target.scope is Scope.BUCKET:
            # Any active grant covers bucket metadata; `authorize` names the longest-lasting one, which
            # is the first active one in this order.
            yield from islice((g for g in self.by_lasting if g.is_active(now)), 1)
            return
        key = target.key
        for length in self.lengths:
            if length > len(key):
                break
            yield from self.by_prefix.get(key[:length], _EMPTY)

    def any_active_below(self, prefix: str, now: datetime) -> bool:
        start = bisect_left(self.prefixes, prefix)
        for grant_prefix in islice(self.prefixes, start, None):
            if not grant_prefix.startswith(prefix):
                return False
            if any(g.is_active(now) for g in self.by_prefix[grant_prefix]):
                return True
        return False


@dataclass(frozen=True)
class GrantIndex:
    """(principal, bucket) -> that principal's grants on that bucket.

    Building only groups the grants; a group is laid out for lookups (`BucketGrants`) the first time a
    request needs it. A store of 100 000 grants is re-indexed in a tenth of the time, and the gateway
    keeps far fewer objects for the garbage collector to walk, when most principals never call.
    """

    groups: dict[tuple[str, str], tuple[Grant, ...]] = field(default_factory=dict)
    version: int = 0
    # A cache of a pure function of `groups`, filled by the event loop's thread only.
    _laid_out: dict[tuple[str, str], BucketGrants] = field(default_factory=dict, compare=False, repr=False)
    # principal -> the buckets it holds grants on: built whole the first time a ListBuckets needs it.
    _buckets_of: dict[str, tuple[str, ...]] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, grants: Iterable[Grant], version: int = 0) -> GrantIndex:
        groups: dict[tuple[str, str], list[Grant]] = defaultdict(list)
        for grant in grants:
            groups[grant.principal, grant.bucket].append(grant)
        return cls({key: tuple(gs) for key, gs in groups.items()}, version)

    def updated(self, in_force: Iterable[Grant], retired: Iterable[Grant], version: int) -> GrantIndex:
        """A new index with these changes merged in: each grant replaces any of the same id, and retired
        grants are dropped. Only the groups they touch are rebuilt; this index is left as it was."""
        touched: dict[tuple[str, str], dict[str, Grant | None]] = defaultdict(dict)
        for grant in retired:
            touched[grant.principal, grant.bucket][grant.id] = None
        for grant in in_force:
            touched[grant.principal, grant.bucket][grant.id] = grant
        groups = dict(self.groups)
        for key, changes in touched.items():
            kept = [g for g in groups.get(key, _EMPTY) if g.id not in changes]
            kept.extend(g for g in changes.values() if g is not None)
            if kept:
                # The order a full load gives, so which of two equally lasting grants is named does
                # not depend on how the index was reached.
                groups[key] = tuple(sorted(kept, key=_load_order))
            else:
                groups.pop(key, None)
        laid_out = {key: value for key, value in self._laid_out.items() if key not in touched}
        return GrantIndex(groups, version, laid_out)

    def grants_for(self, principal: str, buckets: Iterable[str]) -> list[Grant]:
        """Every grant `principal` holds on `buckets` (for inspection; decisions use `decide`)."""
        return [g for bucket in dict.fromkeys(buckets) for g in self.groups.get((principal, bucket), _EMPTY)]

    def decide(self, principal: str, targets: list[Target], now: datetime) -> Decision:
        # A grant that is a candidate for several targets is simply listed again: `authorize` does not mind.
        candidates = [
            grant
            for target in targets
            if (grants := self._bucket(principal, target.bucket)) is not None
            for grant in grants.candidates(target, now)
        ]
        return authorize(targets, candidates, now)

    def buckets_held(self, principal: str, now: datetime) -> dict[str, tuple[Grant, ...]]:
        """The buckets `principal` holds an active grant on, each with those grants (sorted by name)."""
        if self._buckets_of is None:
            by_principal: dict[str, list[str]] = defaultdict(list)
            for holder, bucket in self.groups:
                by_principal[holder].append(bucket)
            # A frozen dataclass: the cache is set once, like `_laid_out`'s entries.
            object.__setattr__(self, "_buckets_of", {p: tuple(sorted(bs)) for p, bs in by_principal.items()})
        held: dict[str, tuple[Grant, ...]] = {}
        for bucket in (self._buckets_of or {}).get(principal, ()):
            active = tuple(g for g in self.groups[principal, bucket] if g.is_active(now))
            if active:
                held[bucket] = active
        return held

    def has_grant_below(self, principal: str, bucket: str, prefix: str, now: datetime) -> bool:
        """Whether an active grant covers something under `prefix` (a "directory" the caller may probe)."""
        grants = self._bucket(principal, bucket)
        return grants is not None and grants.any_active_below(prefix, now)

    def _bucket(self, principal: str, bucket: str) -> BucketGrants | None:
        key = (principal, bucket)
        if (laid_out := self._laid_out.get(key)) is None:
            if (grants := self.groups.get(key)) is None:
                return None
            laid_out = self._laid_out[key] = BucketGrants.build(grants)
        return laid_out

    def __len__(self) -> int:
        return sum(len(gs) for gs in self.groups.values())


def _load_order(grant: Grant) -> tuple[datetime, str]:
    return (grant.created_at, grant.id)
