"""Test-only aws-chunked encoder, the inverse of proxy.s3.chunked's decoder.

Written from the AWS documentation with hashlib/hmac directly, not with the code under test, so the
decoder is checked against an independent implementation.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

EMPTY = hashlib.sha256(b"").hexdigest()


def derive_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def split_payload(payload: bytes, sizes: Sequence[int]) -> list[bytes]:
    """Cut payload into chunks of the given sizes, cycling through them; the last may be shorter."""
    chunks, pos, i = [], 0, 0
    while pos < len(payload):
        size = max(1, sizes[i % len(sizes)])
        chunks.append(payload[pos : pos + size])
        pos += size
        i += 1
    return chunks


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def encode_signed(
    chunks: Iterable[bytes],
    *,
    key: bytes,
    amz_date: str,
    scope: str,
    seed: str,
    trailer: Sequence[tuple[str, str]] | None = None,
    blank_line_before_trailer: bool = False,
    final_blank_line: bool = True,
) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD (trailer None) or ...-PAYLOAD-TRAILER (trailer given)."""
    out = bytearray()
    previous = seed
    for chunk in [*chunks, b""]:
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY,
                hashlib.sha256(chunk).hexdigest(),
            ]
        )
        previous = _hmac_hex(key, string_to_sign)
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode()
        if chunk:
            out += chunk + b"\r\n"
    if trailer is None:
        return bytes(out + b"\r\n")
    if blank_line_before_trailer:
        out += b"\r\n"
    canonical = "".join(f"{name}:{value}\n" for name, value in trailer)
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            amz_date,
            scope,
            previous,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    for name, value in trailer:
        out += f"{name}:{value}\r\n".encode()
    out += f"x-amz-trailer-signature:{_hmac_hex(key, string_to_sign)}\r\n".encode()
    if final_blank_line:
        out += b"\r\n"
    return bytes(out)


def encode_unsigned(chunks: Iterable[bytes], trailer: Sequence[tuple[str, str]]) -> bytes:
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER, framed as the SDKs frame it."""
    out = bytearray()
    for chunk in chunks:
        if chunk:
            out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    out += b"0\r\n"
    for name, value in trailer:
        out += f"{name}:{value}\r\n".encode()
    return bytes(out + b"\r\n")
