"""Upstream framing: the re-framed aws-chunked body is exactly as long as announced and decodes back."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.s3 import forwarding


def _reframe(pieces: list[bytes], chunk: int) -> bytes:
    async def source():  # type: ignore[no-untyped-def]
        for piece in pieces:
            yield piece

    async def collect() -> bytes:
        out = bytearray()
        trailer = forwarding.reframe(
            source(), lambda: [("x-amz-checksum-crc32", "AAAAAA==")], sum(map(len, pieces)), chunk
        )
        async for part in trailer:
            out += part
        return bytes(out)

    return asyncio.run(collect())


def _decode(framed: bytes) -> tuple[bytes, bytes]:
    payload, rest = bytearray(), framed
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(payload), rest
        payload += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=0, max_size=300), max_size=12),
    chunk=st.integers(min_value=1, max_value=257),
)
def test_reframed_body_has_the_announced_length_and_decodes_back(pieces: list[bytes], chunk: int) -> None:
    framed = _reframe(pieces, chunk)
    trailer_line = len("x-amz-checksum-crc32:AAAAAA==")
    assert len(framed) == forwarding.reframed_length(sum(map(len, pieces)), trailer_line, chunk)
    payload, trailer = _decode(framed)
    assert payload == b"".join(pieces)
    assert trailer == b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"


def test_authentication_and_framing_headers_never_go_upstream() -> None:
    headers = CIMultiDict(
        [
            ("Authorization", "AWS4-HMAC-SHA256 Credential=..."),
            ("X-Amz-Date", "20261124T000000Z"),
            ("X-Amz-Security-Token", "token"),
            ("X-Amz-Content-SHA256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            ("X-Amz-Decoded-Content-Length", "5"),
            ("Content-Encoding", "aws-chunked,gzip"),
            ("X-Amz-Meta-Owner", "ml"),
            ("Range", "bytes=0-1"),
            ("Cookie", "session=1"),
        ]
    )
    out = forwarding.upstream_headers(headers)
    assert out == {"content-encoding": "gzip", "x-amz-meta-owner": "ml", "range": "bytes=0-1"}
