"""Decoy objects (honeytokens): keys and prefixes that look like weights or data nobody has a reason
to read. Which requests touch one is decided here (pure); what follows a touch is an anomaly rule's.

The lookup runs on every S3 request, so it is one dict lookup per bucket plus a set membership and one
`str.startswith` over a tuple of prefixes (both in C): no regular expressions, no loops in Python.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.access.grants import Action, Scope, Target


class DecoySet:
    """Decoy keys (`models/a.safetensors`) and prefixes (ending in `/`), per bucket."""

    __slots__ = ("_buckets",)

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        keys: dict[str, set[str]] = {}
        prefixes: dict[str, list[str]] = {}
        for bucket, key in entries:
            if key.endswith("/"):
                prefixes.setdefault(bucket, []).append(key)
            else:
                keys.setdefault(bucket, set()).add(key)
        self._buckets: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
            bucket: (frozenset(keys.get(bucket, ())), tuple(sorted(prefixes.get(bucket, ()))))
            for bucket in keys.keys() | prefixes.keys()
        }

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def __len__(self) -> int:
        return sum(len(keys) + len(prefixes) for keys, prefixes in self._buckets.values())

    def is_decoy(self, bucket: str, key: str) -> bool:
        entry = self._buckets.get(bucket)
        if entry is None:
            return False
        keys, prefixes = entry
        return key in keys or (bool(prefixes) and key.startswith(prefixes))

    def touched(self, targets: Iterable[Target]) -> Target | None:
        """The decoy an operation reads (GET, ranged or not, HEAD, a copy's source), if any. Listing a
        decoy's prefix is not a touch: a listing showing decoys is the lure."""
        for target in targets:
            if (
                target.action is Action.READ
                and target.scope is Scope.OBJECT
                and self.is_decoy(target.bucket, target.key)
            ):
                return target
        return None

    def entries(self) -> list[tuple[str, str]]:
        """(bucket, key or prefix) for every decoy, sorted."""
        return sorted(
            (bucket, item)
            for bucket, (keys, prefixes) in self._buckets.items()
            for item in (*keys, *prefixes)
        )
