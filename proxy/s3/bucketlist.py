"""ListBuckets answered by the gateway itself: the buckets the caller holds an active grant on (pure).

Synthesized from the grants rather than filtered from the bucket's own answer, because:
- the gateway's upstream role seldom may list every bucket (s3:ListAllMyBuckets): a least-privilege
  deployment would otherwise answer AccessDenied, and the caller must never get one here;
- the answer is then a pure function of the in-memory grants: no round trip, and nothing the backend
  holds (other buckets' names, a page that filters down to nothing) can leak or need bounding.
The price: `CreationDate` is when the caller's access to the bucket began, not when it was created, and a
granted bucket that does not exist upstream is listed all the same. Only bucket names, never keys.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from proxy.access.grants import Grant
from proxy.errors import S3Error

MAX_BUCKETS = 10_000  # S3's own bound on max-buckets
S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass(frozen=True, slots=True)
class ListedBucket:
    name: str
    since: datetime  # when the caller's access began: shown as S3's CreationDate
    grants: tuple[Grant, ...]  # the active, usable grants that make it visible


@dataclass(frozen=True, slots=True)
class BucketPage:
    buckets: tuple[ListedBucket, ...]
    next_token: str | None
    prefix: str | None


def visible(held: Mapping[str, Sequence[Grant]], usable: Callable[[Grant], bool]) -> list[ListedBucket]:
    """The buckets with at least one grant usable from the caller's network, by name."""
    listed = []
    for name in sorted(held):
        grants = tuple(g for g in held[name] if usable(g))
        if grants:
            since = min(g.starts_at or g.created_at for g in grants)
            listed.append(ListedBucket(name, since, grants))
    return listed


def page(buckets: Sequence[ListedBucket], params: Mapping[str, str], region: str) -> BucketPage:
    """One page of `buckets` as ListBuckets' parameters ask (prefix, bucket-region, max-buckets,
    continuation-token); bad values raise InvalidArgument as S3 does."""
    prefix = params.get("prefix")
    limit = _max_buckets(params.get("max-buckets"))
    after = _token_name(params["continuation-token"]) if "continuation-token" in params else None
    wanted_region = params.get("bucket-region")
    chosen = [
        b
        for b in buckets
        if (prefix is None or b.name.startswith(prefix))
        and (after is None or b.name > after)
        and (wanted_region is None or wanted_region == region)
    ]
    shown = tuple(chosen[:limit])
    more = len(chosen) > limit
    return BucketPage(shown, _token(shown[-1].name) if more and shown else None, prefix)


def to_xml(listing: BucketPage, owner: str, region: str) -> bytes:
    """S3's ListAllMyBucketsResult for this page."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns="{S3_NAMESPACE}">']
    parts.append(f"<Owner><ID>{escape(owner)}</ID><DisplayName>{escape(owner)}</DisplayName></Owner>")
    parts.append("<Buckets>")
    for bucket in listing.buckets:
        parts.append(
            f"<Bucket><Name>{escape(bucket.name)}</Name>"
            f"<CreationDate>{_timestamp(bucket.since)}</CreationDate>"
            f"<BucketRegion>{escape(region)}</BucketRegion></Bucket>"
        )
    parts.append("</Buckets>")
    if listing.next_token is not None:
        parts.append(f"<ContinuationToken>{escape(listing.next_token)}</ContinuationToken>")
    if listing.prefix is not None:
        parts.append(f"<Prefix>{escape(listing.prefix)}</Prefix>")
    parts.append("</ListAllMyBucketsResult>")
    return "".join(parts).encode()


def _max_buckets(value: str | None) -> int:
    if value is None:
        return MAX_BUCKETS
    if not value.isdigit() or not 1 <= int(value) <= MAX_BUCKETS:
        raise S3Error.invalid_argument(f"max-buckets must be an integer from 1 to {MAX_BUCKETS}.")
    return int(value)


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode("ascii")


def _token_name(token: str) -> str:
    try:
        name = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        name = ""
    if not name:
        raise S3Error.invalid_argument("The continuation token provided is incorrect.")
    return name


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
