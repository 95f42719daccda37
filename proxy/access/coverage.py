"""Who had access to a resource when (pure): the spans in which each grant was in force over an area.

A grant is in force from its creation (or its scheduled start, if later) until it expires or is revoked,
whichever comes first: the moments `Grant.is_active` says yes, once the grant exists. Over an area `s3://bucket/prefix`,
a grant counts when it covers the whole area (its prefix is a prefix of the area's) or part of it (the
area's prefix is a prefix of the grant's): both could read what lies there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from proxy.access.grants import Grant

# The narrowest bar drawn: a grant held for a moment of a long range still shows.
MIN_WIDTH = 0.004


@dataclass(frozen=True, slots=True)
class Span:
    """One grant's time in force over the area, clipped to the range asked about: [start, end)."""

    grant: Grant
    start: datetime
    end: datetime
    whole: bool  # covers the whole area asked about; else only a part under it

    @property
    def principal(self) -> str:
        return self.grant.principal


@dataclass(frozen=True, slots=True)
class Bar:
    """Where a span sits on a timeline of the range, as fractions of its width (0..1)."""

    offset: float
    width: float


def in_force(grant: Grant) -> tuple[datetime, datetime | None]:
    """The grant's whole time in force, [start, end); end None: open (standing, never revoked)."""
    start = max(grant.created_at, grant.starts_at or grant.created_at)
    ends = [t for t in (grant.expires_at, grant.revoked_at) if t is not None]
    return start, min(ends) if ends else None


def overlap(grant: Grant, bucket: str, prefix: str) -> bool | None:
    """True: the grant covers all of `s3://bucket/prefix`; False: part of it; None: none of it."""
    if grant.bucket != bucket:
        return None
    if prefix.startswith(grant.prefix):
        return True
    if grant.prefix.startswith(prefix):
        return False
    return None


def coverage(
    grants: Iterable[Grant], bucket: str, prefix: str, since: datetime, until: datetime
) -> list[Span]:
    """Each grant's span in force over the area within [since, until), earliest first."""
    spans = []
    for grant in grants:
        whole = overlap(grant, bucket, prefix)
        if whole is None:
            continue
        start, end = in_force(grant)
        clipped_start = max(start, since)
        clipped_end = until if end is None else min(end, until)
        if clipped_start < clipped_end:
            spans.append(Span(grant, clipped_start, clipped_end, whole))
    spans.sort(key=lambda s: (s.start, s.grant.principal, s.grant.id))
    return spans


def bar(span: Span, since: datetime, until: datetime) -> Bar:
    """The span drawn on a timeline from `since` to `until` (at least a sliver wide, so it shows)."""
    total = (until - since).total_seconds()
    width = max((span.end - span.start).total_seconds() / total, MIN_WIDTH)
    offset = min((span.start - since).total_seconds() / total, 1 - width)  # a sliver stays inside
    return Bar(offset, width)
