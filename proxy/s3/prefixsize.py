"""How much lies under a prefix, for approvers: a bounded listing (proxy/s3/listing.py), its answer cached
per prefix for minutes.

Bounded because a training-data prefix may hold millions of keys: past MAX_PAGES pages the counts are
lower bounds and the approver reads "more than N". Cached because every look at the inbox, the card and
the CLI would otherwise list the bucket again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from proxy.access.context import PrefixSize
from proxy.s3.listing import Listing, list_prefix
from proxy.s3.upstream import Upstream

CACHE_SECONDS = 300.0
MAX_PAGES = 10
PAGE_KEYS = 1000
TIMEOUT_SECONDS = 10.0  # for the whole listing


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
        listing = Listing()
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await list_prefix(
                    self.upstream,
                    bucket,
                    prefix,
                    max_pages=self._max_pages,
                    max_keys=self._max_pages * self._page_keys,
                    page_size=self._page_keys,
                    into=listing,
                )
        except TimeoutError:
            return PrefixSize(bucket, prefix, error=f"no answer within {TIMEOUT_SECONDS:g} s")
        except Exception as exc:
            return PrefixSize(bucket, prefix, error=str(exc) or type(exc).__name__)
        finally:
            self.listings += listing.pages
        return PrefixSize(bucket, prefix, len(listing.objects), listing.size, complete=listing.complete)
