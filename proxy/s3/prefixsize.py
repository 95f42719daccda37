"""How much lies under a prefix, for approvers: a bounded ListObjectsV2 through the gateway's own upstream
client, its answer cached per prefix for minutes.

Bounded because a training-data prefix may hold millions of keys: past MAX_PAGES pages the counts are
lower bounds and the approver reads "more than N". Cached because every look at the inbox, the card and
the CLI would otherwise list the bucket again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from defusedxml.ElementTree import fromstring

from proxy.access.context import PrefixSize
from proxy.s3 import sigv4
from proxy.s3.httpclient import UpstreamResponse
from proxy.s3.upstream import Upstream, UpstreamRequest

CACHE_SECONDS = 300.0
MAX_PAGES = 10
PAGE_KEYS = 1000
TIMEOUT_SECONDS = 10.0  # for the whole listing
MAX_PAGE_BODY = 4 * 1024 * 1024  # a page of 1000 keys is ~300 KB; anything far larger is not a listing


def parse_page(body: bytes) -> tuple[int, int, str | None]:
    """(objects, bytes, next continuation token or None) of one ListObjectsV2 answer (pure)."""
    root = fromstring(body)
    objects = size = 0
    token: str | None = None
    truncated = False
    for child in root:
        name = child.tag.rsplit("}", 1)[-1]
        if name == "Contents":
            objects += 1
            for leaf in child:
                if leaf.tag.rsplit("}", 1)[-1] == "Size":
                    size += int(leaf.text or 0)
        elif name == "IsTruncated":
            truncated = (child.text or "").strip() == "true"
        elif name == "NextContinuationToken":
            token = child.text or None
    return objects, size, token if truncated else None


class PrefixSizer:
    """Counts the objects and bytes under `s3://bucket/prefix`, at most MAX_PAGES pages, cached per prefix;
    concurrent callers for one prefix share one listing."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_seconds: float = CACHE_SECONDS,
        max_pages: int = MAX_PAGES,
        page_keys: int = PAGE_KEYS,
    ) -> None:
        self.upstream = upstream
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._max_pages = max_pages
        self._page_keys = page_keys
        self._cache: dict[tuple[str, str], tuple[float, PrefixSize]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.listings = 0  # how many listings reached the bucket (the cache's effect, for tests)

    async def size(self, bucket: str, prefix: str) -> PrefixSize:
        where = (bucket, prefix)
        async with self._locks.setdefault(where, asyncio.Lock()):
            cached = self._cache.get(where)
            if cached is not None and self._clock() - cached[0] < self._cache_seconds:
                return cached[1]
            found = await self._measure(bucket, prefix)
            # Drop what has gone stale, so prefixes looked at once do not pile up.
            now = self._clock()
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self._cache_seconds}
            self._cache[where] = (now, found)
            self._locks = {k: v for k, v in self._locks.items() if k in self._cache or v.locked()}
            return found

    async def _measure(self, bucket: str, prefix: str) -> PrefixSize:
        objects = size = 0
        token: str | None = None
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                for _ in range(self._max_pages):
                    self.listings += 1
                    count, used, token = await self._page(bucket, prefix, token)
                    objects, size = objects + count, size + used
                    if token is None:
                        return PrefixSize(bucket, prefix, objects, size)
        except TimeoutError:
            return PrefixSize(bucket, prefix, error=f"no answer within {TIMEOUT_SECONDS:g} s")
        except Exception as exc:
            return PrefixSize(bucket, prefix, error=str(exc) or type(exc).__name__)
        return PrefixSize(bucket, prefix, objects, size, complete=False)

    async def _page(self, bucket: str, prefix: str, token: str | None) -> tuple[int, int, str | None]:
        query = [("list-type", "2"), ("max-keys", str(self._page_keys)), ("prefix", prefix)]
        if token is not None:
            query.append(("continuation-token", token))
        request = UpstreamRequest("GET", bucket, None, query, {}, None, sigv4.EMPTY_SHA256)
        response = await self.upstream.send(request)
        try:
            body = await _read(response)
        finally:
            response.release()
        if response.status != 200:
            raise RuntimeError(f"listing answered HTTP {response.status}")
        return parse_page(body)


async def _read(response: UpstreamResponse) -> bytes:
    pieces: list[bytes] = []
    size = 0
    async for piece in response.content.iter_any():
        pieces.append(piece)
        size += len(piece)
        if size > MAX_PAGE_BODY:
            raise RuntimeError("listing page too large")
    return b"".join(pieces)
