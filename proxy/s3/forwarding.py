"""What crosses the gateway in each direction: header filtering and request body framing (pure)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from multidict import MultiMapping

from proxy.errors import S3Error
from proxy.s3 import sigv4
from proxy.s3.chunked import ChunkedSpec
from proxy.s3.httpclient import Piece

# Request headers the caller may pass to the bucket besides x-amz-*: everything S3 reads from a request.
_PASS_REQUEST = frozenset(
    {
        "content-type",
        "content-md5",
        "content-disposition",
        "content-language",
        "cache-control",
        "expires",
        "range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    }
)
# x-amz-* headers that belong to the caller's signature or framing; the gateway sets its own.
_OWN_REQUEST = frozenset(
    {
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "x-amz-decoded-content-length",
        "x-amz-trailer",
    }
)
# Hop-by-hop response headers (RFC 9110 §7.6.1) and ones aiohttp sets itself.
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "content-length",
        "date",
        "server",
    }
)

# Size of the chunks the gateway frames upstream when it must carry a checksum trailer.
REFRAME_CHUNK = 1024 * 1024


def upstream_headers(headers: MultiMapping[str]) -> dict[str, str]:
    """The caller's headers minus authentication, framing and hop-by-hop ones."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if (lname.startswith("x-amz-") and lname not in _OWN_REQUEST) or lname in _PASS_REQUEST:
            out[lname] = f"{out[lname]},{value}" if lname in out else value
        elif lname == "content-encoding":
            kept = [e.strip() for e in value.split(",") if e.strip() and e.strip() != "aws-chunked"]
            if kept:
                out[lname] = ",".join(kept)
    return out


def downstream_headers(headers: MultiMapping[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items() if k.lower() not in _DROP_RESPONSE]


@dataclass(frozen=True, slots=True)
class Framing:
    """How the body goes upstream: the payload hash to sign, extra headers, and its exact length."""

    payload_hash: str
    headers: dict[str, str]
    content_length: int


def plain_framing(payload_hash: str, content_length: int) -> Framing:
    """A body forwarded byte for byte. The caller's declared hash goes upstream so the bucket checks it."""
    declared = payload_hash if is_hex_sha256(payload_hash) else sigv4.UNSIGNED_PAYLOAD
    return Framing(declared, {}, content_length)


def decoded_framing(spec: ChunkedSpec) -> Framing:
    """An aws-chunked body, decoded and verified here, forwarded plain (no trailer to carry)."""
    return Framing(sigv4.UNSIGNED_PAYLOAD, {}, spec.decoded_length)


def trailer_framing(spec: ChunkedSpec, checksum_algorithm_digest_size: int) -> Framing:
    """An aws-chunked body with a checksum trailer, re-framed as unsigned aws-chunked so the bucket
    stores and verifies the checksum too (multipart uploads with checksums need it per part)."""
    (trailer_name,) = spec.trailer_names
    value_len = len(base64.b64encode(b"\0" * checksum_algorithm_digest_size))
    length = reframed_length(spec.decoded_length, len(trailer_name) + 1 + value_len)
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(spec.decoded_length),
        "x-amz-trailer": trailer_name,
    }
    return Framing(sigv4.STREAMING_UNSIGNED_TRAILER, headers, length)


def reframed_length(decoded_length: int, trailer_line_len: int, chunk: int = REFRAME_CHUNK) -> int:
    full, rest = divmod(decoded_length, chunk)
    size = full * (len(f"{chunk:x}") + 2 + chunk + 2)
    if rest:
        size += len(f"{rest:x}") + 2 + rest + 2
    return size + len("0\r\n") + trailer_line_len + 2 + 2


async def reframe(
    pieces: AsyncIterable[Piece],
    trailer: Callable[[], Iterable[tuple[str, str]]],
    total: int,
    chunk: int = REFRAME_CHUNK,
) -> AsyncIterator[Piece]:
    """Re-emit a decoded payload of `total` bytes as unsigned aws-chunked, then the trailer.

    Chunks are `chunk` bytes but the last, so the framed length is computable up front and the
    upstream gets a Content-Length. Payload bytes are passed on as slices, never copied.
    """
    left_in_chunk = 0
    remaining = total
    async for piece in pieces:
        view = memoryview(piece)
        while view:
            if left_in_chunk == 0:
                left_in_chunk = min(chunk, remaining)
                yield b"%x\r\n" % left_in_chunk
            take = view[:left_in_chunk]
            yield take
            view = view[len(take) :]
            left_in_chunk -= len(take)
            remaining -= len(take)
            if left_in_chunk == 0:
                yield b"\r\n"
    lines = b"".join(f"{name}:{value}\r\n".encode() for name, value in trailer())
    yield b"0\r\n" + lines + b"\r\n"


def content_length(headers: MultiMapping[str]) -> int | None:
    value = headers.get("Content-Length")
    if value is None:
        return None
    if not value.isdigit():
        raise S3Error.invalid_argument("Content-Length must be a non-negative integer")
    return int(value)


def is_hex_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())
