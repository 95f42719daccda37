"""Can the gateway reach its bucket with its credentials? A cheap signed request, its answer cached.

`/readyz` includes it (a replica that cannot reach the bucket only turns requests into 502s), and
`serve` warns at start when the bucket is unreachable or refuses the credentials.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.s3 import sigv4
from proxy.s3.upstream import Upstream, UpstreamRequest

# Short enough that a replica whose bucket came back is ready again soon; long enough that a
# load balancer probing every second costs the bucket one request per replica every few seconds.
CACHE_SECONDS = 10.0
TIMEOUT_SECONDS = 5.0
MAX_ERROR_BODY = 64 * 1024
# S3 error codes that mean the bucket does not accept the gateway's credentials.
_CREDENTIALS_REFUSED = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
)
_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


@dataclass(frozen=True, slots=True)
class BucketHealth:
    ok: bool
    status: str  # reachable | unreachable | credentials_refused | no_such_bucket | access_denied | error
    detail: str = ""


def judge(status: int, body: bytes, *, bucket: str | None) -> BucketHealth:
    """What an S3 answer to the probe says about the gateway's access (pure)."""
    if 200 <= status < 300:
        return BucketHealth(True, "reachable")
    found = _CODE.search(body)
    code = found.group(1).decode("ascii", "replace") if found else f"HTTP {status}"
    if code in _CREDENTIALS_REFUSED:
        return BucketHealth(False, "credentials_refused", code)
    if code == "NoSuchBucket":
        return BucketHealth(False, "no_such_bucket", code)
    if code == "AccessDenied" and bucket is None:
        # Listing all buckets is a permission a gateway's role seldom has: the signature was accepted.
        return BucketHealth(True, "reachable", code)
    if code == "AccessDenied":
        return BucketHealth(False, "access_denied", code)
    return BucketHealth(False, "error", code)


class BucketProbe:
    """Lists at most zero keys of `bucket` (or, without one, lists the buckets), at most once per
    CACHE_SECONDS; concurrent callers share one probe."""

    def __init__(
        self,
        upstream: Upstream,
        bucket: str | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self.upstream = upstream
        self.bucket = bucket
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._last: tuple[float, BucketHealth] | None = None
        self._lock = asyncio.Lock()

    async def health(self) -> BucketHealth:
        async with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self._cache_seconds:
                return self._last[1]
            result = await self._probe()
            self._last = (self._clock(), result)
            return result

    async def _probe(self) -> BucketHealth:
        query = [("list-type", "2"), ("max-keys", "0")] if self.bucket else []
        request = UpstreamRequest("GET", self.bucket, None, query, {}, None, sigv4.EMPTY_SHA256)
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                response = await self.upstream.send(request)
                try:
                    body = await read_bounded(response.content, MAX_ERROR_BODY)
                finally:
                    # Frees the pool slot (and keeps the connection when the answer was read whole).
                    response.release()
        except TimeoutError:
            return BucketHealth(False, "unreachable", f"no answer within {TIMEOUT_SECONDS:g} s")
        except Exception as exc:
            return BucketHealth(False, "unreachable", str(exc) or type(exc).__name__)
        return judge(response.status, body, bucket=self.bucket)


async def read_bounded(content: object, limit: int) -> bytes:
    """At most `limit` bytes of an upstream answer's body."""
    pieces: list[bytes] = []
    size = 0
    async for piece in content.iter_any():  # type: ignore[attr-defined]
        pieces.append(piece)
        size += len(piece)
        if size >= limit:
            break
    return b"".join(pieces)[:limit]
