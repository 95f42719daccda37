"""The bucket readiness probe: what an answer means (pure), and how often it asks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.s3.bucketprobe import BucketHealth, BucketProbe, judge


def error(code: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()


@pytest.mark.parametrize(
    ("status", "body", "bucket", "expected"),
    [
        (200, b"", "b", BucketHealth(True, "reachable")),
        (
            403,
            error("InvalidAccessKeyId"),
            "b",
            BucketHealth(False, "credentials_refused", "InvalidAccessKeyId"),
        ),
        (
            403,
            error("SignatureDoesNotMatch"),
            None,
            BucketHealth(False, "credentials_refused", "SignatureDoesNotMatch"),
        ),
        (400, error("ExpiredToken"), "b", BucketHealth(False, "credentials_refused", "ExpiredToken")),
        (404, error("NoSuchBucket"), "b", BucketHealth(False, "no_such_bucket", "NoSuchBucket")),
        (403, error("AccessDenied"), "b", BucketHealth(False, "access_denied", "AccessDenied")),
        (403, error("AccessDenied"), None, BucketHealth(True, "reachable", "AccessDenied")),
        (503, b"", "b", BucketHealth(False, "error", "HTTP 503")),
    ],
)
def test_judge_reads_the_answer(status: int, body: bytes, bucket: str | None, expected: BucketHealth) -> None:
    assert judge(status, body, bucket=bucket) == expected


class _Upstream:
    def __init__(self) -> None:
        self.sent = 0

    async def send(self, _request: Any) -> Any:
        self.sent += 1
        raise ConnectionRefusedError("Connection refused")


async def test_the_probe_is_cached_and_a_refused_connection_is_unreachable() -> None:
    now = [0.0]
    upstream = _Upstream()
    probe = BucketProbe(upstream, "b", clock=lambda: now[0], cache_seconds=10)  # type: ignore[arg-type]
    first, second = await asyncio.gather(probe.health(), probe.health())
    assert first == second == BucketHealth(False, "unreachable", "Connection refused")
    assert upstream.sent == 1
    now[0] = 11.0
    await probe.health()
    assert upstream.sent == 2
