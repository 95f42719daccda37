"""A bounded ListObjectsV2 of one prefix through the gateway's own upstream client (its credentials, its
pool): the approvers' size of a prefix (proxy/s3/prefixsize.py) and the models the whole-model rule
learns (proxy/observe/model_listing.py) both read the bucket this way.

Bounded in pages and keys because a training-data prefix may hold millions of objects: past the bound
the listing says it is incomplete instead of going on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.s3 import sigv4
from proxy.s3.bucketprobe import read_bounded
from proxy.s3.upstream import Upstream, UpstreamRequest
from proxy.s3.xmlbodies import MAX_LISTED_KEYS, MAX_LISTING_BODY, listed_objects


@dataclass
class Listing:
    objects: list[tuple[str, int]] = field(default_factory=list)  # (key, size)
    pages: int = 0  # how many pages the bucket answered
    complete: bool = False  # False: a bound was reached before the last page

    @property
    def size(self) -> int:
        return sum(size for _key, size in self.objects)


async def list_prefix(
    upstream: Upstream,
    bucket: str,
    prefix: str,
    *,
    max_pages: int,
    max_keys: int,
    page_size: int = MAX_LISTED_KEYS,
    into: Listing | None = None,
) -> Listing:
    """The objects under s3://bucket/prefix, at most `max_pages` pages and `max_keys` keys; filled into
    `into` page by page, so a caller that gives up (a timeout) still sees how far it got."""
    listing = Listing() if into is None else into
    token: str | None = None
    while listing.pages < max_pages and len(listing.objects) < max_keys:
        query = [("list-type", "2"), ("max-keys", str(min(page_size, max_keys - len(listing.objects))))]
        if prefix:
            query.append(("prefix", prefix))
        if token:
            query.append(("continuation-token", token))
        response = await upstream.send(
            UpstreamRequest("GET", bucket, None, sorted(query), {}, None, sigv4.EMPTY_SHA256)
        )
        try:
            body = await read_bounded(response.content, MAX_LISTING_BODY + 1)
        finally:
            response.release()
        if response.status != 200:
            raise RuntimeError(f"listing s3://{bucket}/{prefix} answered HTTP {response.status}")
        listing.pages += 1
        objects, token = listed_objects(body)
        listing.objects.extend(objects)
        if token is None:
            listing.complete = len(listing.objects) <= max_keys
            break
    del listing.objects[max_keys:]
    return listing
