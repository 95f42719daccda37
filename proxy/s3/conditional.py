"""Does a bucket honour `If-None-Match: *` (S3 conditional writes)? Probed once per bucket, cached.

A `create` grant may write new objects only; the gateway enforces that by sending its writes upstream
with `If-None-Match: *`. A bucket (or S3-compatible store) that ignores the header would silently let
such a write replace an object, so before the first create-only write to a bucket the gateway tries
each guarded operation on a probe object of its own and believes the bucket only where it answered
`412 Precondition Failed`. Anything else (the header ignored, an error, no answer) counts as "not
enforced", and create-only writes of that kind are refused there: fail closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.s3 import sigv4
from proxy.s3.upstream import Upstream, UpstreamRequest

GUARDED_OPERATIONS = ("PutObject", "CopyObject", "CompleteMultipartUpload")
PROBE_PREFIX = ".grantgate-probe/"
# A bucket that honours the header keeps doing so; one that did not (or could not be asked) is asked
# again a minute later, so a transient error does not refuse create writes for long.
ENFORCED_SECONDS = 3600.0
NOT_ENFORCED_SECONDS = 60.0
TIMEOUT_SECONDS = 10.0
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]{1,1024})</UploadId>")


def enforced(status: int) -> bool:
    """A conditional write on an existing key was refused as S3 refuses it: the guard holds (pure)."""
    return status == 412


@dataclass(frozen=True, slots=True)
class Enforcement:
    """What a probe of one bucket found: the guarded operations that honour the header."""

    operations: frozenset[str]
    detail: str = ""  # why an operation is missing, for the refusal and the log

    def covers(self, operation: str) -> bool:
        return operation in self.operations


class ConditionalWrites:
    """Per-bucket answers to "is If-None-Match: * enforced here?", probed on first need; concurrent
    callers for one bucket share one probe."""

    def __init__(self, upstream: Upstream, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = upstream
        self._clock = clock
        self._known: dict[str, tuple[float, Enforcement]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def enforcement(self, bucket: str) -> Enforcement:
        async with self._locks.setdefault(bucket, asyncio.Lock()):
            known = self._known.get(bucket)
            if known is not None and self._clock() < known[0]:
                return known[1]
            try:
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    found = await _Probe(self.upstream, bucket).run()
            except Exception as exc:  # unreachable, timed out: nothing is believed
                found = Enforcement(frozenset(), f"the probe failed: {exc!r}")
            lifetime = (
                ENFORCED_SECONDS
                if found.operations == frozenset(GUARDED_OPERATIONS)
                else NOT_ENFORCED_SECONDS
            )
            self._known[bucket] = (self._clock() + lifetime, found)
            return found


class _Probe:
    """Writes `.grantgate-probe/<random>`, tries each guarded operation on it with the header, and
    removes what it made."""

    def __init__(self, upstream: Upstream, bucket: str) -> None:
        self.upstream = upstream
        self.bucket = bucket
        self.key = PROBE_PREFIX + secrets.token_hex(8)

    async def run(self) -> Enforcement:
        status, _ = await self._send("PUT", body=b"grantgate conditional write probe")
        if status // 100 != 2:
            return Enforcement(frozenset(), f"writing the probe object was answered {status}")
        try:
            results = {
                "PutObject": await self._put(),
                "CopyObject": await self._copy(),
                "CompleteMultipartUpload": await self._complete(),
            }
        finally:
            await self._send("DELETE")
        missing = [f"{name} (answered {status})" for name, status in results.items() if not enforced(status)]
        detail = "ignored If-None-Match on " + ", ".join(missing) if missing else ""
        return Enforcement(frozenset(n for n, s in results.items() if enforced(s)), detail)

    async def _put(self) -> int:
        status, _ = await self._send("PUT", headers={"if-none-match": "*"}, body=b"replaced")
        return status

    async def _copy(self) -> int:
        headers = {
            "if-none-match": "*",
            "x-amz-copy-source": f"/{self.bucket}/{self.key}",
            "x-amz-metadata-directive": "REPLACE",
        }
        status, _ = await self._send("PUT", headers=headers)
        return status

    async def _complete(self) -> int:
        status, body = await self._send("POST", query=[("uploads", "")])
        found = _UPLOAD_ID.search(body)
        if status // 100 != 2 or found is None:
            return status
        upload_id = found.group(1).decode()
        try:
            part = [("partNumber", "1"), ("uploadId", upload_id)]
            status, _, etag = await self._answer("PUT", query=part, body=b"x")
            if status // 100 != 2:
                return status
            xml = (
                "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
                f"<ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
            ).encode()
            status, _ = await self._send(
                "POST", query=[("uploadId", upload_id)], headers={"if-none-match": "*"}, body=xml
            )
            return status
        finally:
            await self._send("DELETE", query=[("uploadId", upload_id)])

    async def _send(
        self,
        method: str,
        *,
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, bytes]:
        status, answer, _etag = await self._answer(method, query=query, headers=headers, body=body)
        return status, answer

    async def _answer(
        self,
        method: str,
        *,
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, bytes, str]:
        """Status, body (probe answers are small) and ETag of one signed request on the probe key."""
        payload_hash = hashlib.sha256(body).hexdigest() if body else sigv4.EMPTY_SHA256
        sent = {**(headers or {}), **({"content-length": str(len(body))} if body else {})}
        request = UpstreamRequest(
            method, self.bucket, self.key, query or [], sent, body or None, payload_hash
        )
        response = await self.upstream.send(request)
        try:
            pieces = [piece async for piece in response.content.iter_any()]
        finally:
            response.release()
        return response.status, b"".join(pieces), response.headers.get("ETag", "")
