"""What a model is, learned from a bucket's listing, and which bytes of it a reader has had (pure).

A model is a directory ("prefix/") holding weight shards (`*.safetensors`, `*.gguf`, `*.onnx`, `*.bin`,
`*.pt`) or a `model.safetensors.index.json`; its size is the sum of its shards' sizes. The listing comes
from worker 0's periodic, bounded walk of the policy's resources (proxy/observe/model_listing.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

SHARD_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".bin", ".pt")
INDEX_NAME = "model.safetensors.index.json"
# Per object, at most this many separate byte ranges are remembered: past it the newest range is joined
# to its nearer neighbour, counting the gap as read (a reader cannot hide a pull behind millions of tiny
# scattered ranges, nor make the count slow).
MAX_RANGES = 256


@dataclass(frozen=True, slots=True)
class Model:
    bucket: str
    prefix: str  # the directory, ending in "/" ("" for the bucket's root)
    shards: dict[str, int]  # key -> size in bytes

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def size(self) -> int:
        return sum(self.shards.values())


def is_shard(key: str) -> bool:
    return key.lower().endswith(SHARD_SUFFIXES)


def _directory(key: str) -> str:
    head, slash, _ = key.rpartition("/")
    return head + slash


def find_models(bucket: str, listing: Iterable[tuple[str, int]]) -> list[Model]:
    """The models among one bucket's objects (key, size), by directory."""
    shards: dict[str, dict[str, int]] = {}
    indexed: set[str] = set()
    for key, size in listing:
        directory = _directory(key)
        if key.rpartition("/")[2] == INDEX_NAME:
            indexed.add(directory)
        elif is_shard(key) and size > 0:
            shards.setdefault(directory, {})[key] = size
    return [Model(bucket, d, shards.get(d, {})) for d in sorted(shards.keys() | indexed)]


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """The models known, found by the shard an object key is."""

    by_shard: dict[tuple[str, str], Model] = field(default_factory=dict)

    @classmethod
    def of(cls, models: Iterable[Model]) -> ModelCatalog:
        return cls({(m.bucket, key): m for m in models for key in m.shards})

    def model_of(self, bucket: str | None, key: str | None) -> Model | None:
        if bucket is None or key is None:
            return None
        return self.by_shard.get((bucket, key))

    def __len__(self) -> int:
        return len({m.name for m in self.by_shard.values()})

    @property
    def size(self) -> int:
        """The bytes of every model known."""
        return sum(m.shards[key] for (_, key), m in self.by_shard.items())


class KnownModels:
    """The current catalogue, replaced whole by each listing; the detector reads it per event."""

    def __init__(self, catalog: ModelCatalog | None = None) -> None:
        self.catalog = catalog or ModelCatalog()

    def replace(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog


class Ranges:
    """Disjoint, sorted half-open byte ranges [start, end) of one object: what a reader has had."""

    __slots__ = ("ends", "starts", "total")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.total = 0

    def add(self, start: int, end: int) -> int:
        """Record [start, end); return how much the bytes counted as had grew (the part not already
        covered, plus any gap joined to stay within MAX_RANGES)."""
        if end <= start:
            return 0
        # Every range touching or overlapping [start, end) is merged into it.
        lo = bisect.bisect_left(self.ends, start)
        hi = bisect.bisect_right(self.starts, end)
        if lo < hi:
            start, end = min(start, self.starts[lo]), max(end, self.ends[hi - 1])
        merged_total = sum(self.ends[i] - self.starts[i] for i in range(lo, hi))
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]
        added = (end - start) - merged_total
        if len(self.starts) > MAX_RANGES:
            added += self._join_nearest(lo)
        self.total += added
        return added

    def _join_nearest(self, i: int) -> int:
        """Join range `i` to its nearer neighbour; return the gap now counted as read. O(1) in the number
        of ranges, unlike looking for the smallest gap anywhere, and never counts less than was read."""
        before = self.starts[i] - self.ends[i - 1] if i > 0 else None
        after = self.starts[i + 1] - self.ends[i] if i + 1 < len(self.starts) else None
        if after is None or (before is not None and before <= after):
            assert before is not None
            i, gap = i - 1, before
        else:
            gap = after
        self.ends[i] = self.ends[i + 1]
        del self.starts[i + 1], self.ends[i + 1]
        return gap

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True, slots=True)
class ShardRead:
    """Bytes [start, end) of one shard of `model` that `principal` read, under `grant_ids`: what each
    gateway flushes to the store, so that a pull split over replicas is summed."""

    principal: str
    model: str  # Model.name
    shard: str  # the object key
    start: int
    end: int
    grant_ids: tuple[str, ...]
    at: float = 0.0  # when it was flushed (unix time), once stored


class Tally:
    """One principal's reads of models, summed from every replica's flushed rows: the distinct ranges of
    each shard and the grants used per model. Adding the same rows again changes nothing, so a reader
    may take overlapping slices of the rows (and must, to miss none committed late)."""

    __slots__ = ("grants", "ranges", "seen_until", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.seen_until = started  # the newest row's time taken so far
        self.ranges: dict[tuple[str, str], Ranges] = {}  # (model, shard) -> what was had
        self.grants: dict[str, dict[str, None]] = {}  # model -> grants, in order of first use

    def add(self, reads: Iterable[ShardRead]) -> None:
        for r in reads:
            self.ranges.setdefault((r.model, r.shard), Ranges()).add(r.start, r.end)
            self.grants.setdefault(r.model, {}).update(dict.fromkeys(r.grant_ids))
            self.seen_until = max(self.seen_until, r.at)

    def models(self) -> list[str]:
        return sorted(self.grants)

    def bytes_read(self, model: Model) -> tuple[int, int]:
        """Distinct bytes of `model` had (at most each shard's size), and how many shards were touched."""
        had = [
            min(ranges.total, size)
            for shard, size in model.shards.items()
            if (ranges := self.ranges.get((model.name, shard))) is not None
        ]
        return sum(had), len(had)
