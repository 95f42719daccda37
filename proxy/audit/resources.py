"""Names for areas of buckets ("models" for s3://archive/models/), for metric labels, audit and anomaly rules.

Pure. The label a request gets is bounded whatever a client sends: a named resource, else the bucket when
some grant covers it, else "other".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OTHER = "other"


@dataclass(frozen=True, slots=True)
class Area:
    name: str
    bucket: str
    prefix: str

    def covers(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix


@dataclass(frozen=True)
class ResourceCatalog:
    areas: tuple[Area, ...] = ()

    @classmethod
    def from_patterns(cls, named: Mapping[str, Iterable[str]]) -> ResourceCatalog:
        areas = [Area(name, *split_s3(uri)) for name, uris in named.items() for uri in uris]
        # Longest prefix first, so the most specific area names a key.
        areas.sort(key=lambda a: (a.bucket, -len(a.prefix)))
        return cls(tuple(areas))

    def name_for(self, bucket: str | None, key: str | None) -> str | None:
        """The named area a bucket/key falls in, if any."""
        if not bucket:
            return None
        for area in self.areas:
            if area.covers(bucket, key or ""):
                return area.name
        return None

    def label_for(self, bucket: str | None, key: str | None, *, granted: bool) -> str:
        """A bounded label: the area's name, else the bucket if a grant covered the request, else "other"."""
        name = self.name_for(bucket, key)
        if name is not None:
            return name
        return bucket if granted and bucket else OTHER

    def matches(self, selector: str, bucket: str | None, key: str | None) -> bool:
        """Whether `selector` (a resource name or an s3://bucket/prefix) covers bucket/key."""
        if not bucket:
            return False
        if selector.startswith("s3://"):
            sel_bucket, sel_prefix = split_s3(selector)
            return bucket == sel_bucket and (key or "").startswith(sel_prefix)
        return self.name_for(bucket, key) == selector
