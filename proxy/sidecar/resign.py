"""Re-signing a signed aws-chunked body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) for new credentials.

The job signed its chunks with placeholder credentials; the sidecar swaps every chunk signature (and the
trailer signature) for one chained from its own seed signature. Only the 64 hex digits of each signature
change, so the body keeps its exact length and Content-Length still holds. Pure and streaming: fed bytes,
returns bytes; memory is bounded by one chunk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from proxy.s3.chunked import TRAILER_SIGNATURE, chunk_signature, trailer_signature
from proxy.s3.sigv4 import EMPTY_SHA256

_SIGNATURE_EXT = b";chunk-signature="
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SIGNATURE_LENGTH = 64

_HEADER, _DATA, _DATA_END, _FINAL_END, _TRAILER, _DONE = range(6)


class ChunkFramingError(ValueError):
    """The body is not the aws-chunked framing its x-amz-content-sha256 announced."""


@dataclass(frozen=True, slots=True)
class ResignKey:
    """What the new chunk signatures chain from: the new request's signing key, date, scope and seed."""

    signing_key: bytes
    amz_date: str
    scope: str
    seed_signature: str


class ChunkResigner:
    def __init__(
        self, key: ResignKey, *, trailer: bool, max_chunk_size: int = 16 * 1024 * 1024, max_line: int = 4096
    ) -> None:
        self._key = key
        self._trailer = trailer
        self._max_chunk_size = max_chunk_size
        self._max_line = max_line
        self._previous = key.seed_signature
        self._state = _HEADER
        self._line = bytearray()
        self._size_text = b""
        self._remaining = 0
        self._chunk = bytearray()
        self._fields: list[tuple[str, str]] = []
        self._trailer_signed = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._state == _DATA:
                take = min(self._remaining, end - pos)
                self._chunk += data[pos : pos + take]
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self._state = _DATA_END
                continue
            if self._state == _DONE:
                raise ChunkFramingError("data after the end of the aws-chunked body")
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._take_partial(data[pos:])
                break
            self._take_partial(data[pos:newline])
            pos = newline + 1
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r"):
                raise ChunkFramingError("aws-chunked lines must end with CRLF")
            self._on_line(line[:-1], out)
        return out

    def finish(self) -> None:
        if self._state != _DONE or self._line:
            raise ChunkFramingError("the aws-chunked body ended early")

    def _take_partial(self, piece: bytes) -> None:
        if len(self._line) + len(piece) > self._max_line:
            raise ChunkFramingError("an aws-chunked line is too long")
        self._line += piece

    def _on_line(self, line: bytes, out: list[bytes]) -> None:
        state = self._state
        if state == _HEADER:
            self._on_header(line, out)
        elif state == _DATA_END:
            if line:
                raise ChunkFramingError("chunk data longer than its declared size")
            out.append(self._signed_chunk())
            self._state = _HEADER
        elif state == _FINAL_END:
            if line:
                raise ChunkFramingError("expected the end of the body after the final chunk")
            out.append(b"\r\n")
            self._state = _DONE
        else:
            self._on_trailer_line(line, out)

    def _on_header(self, line: bytes, out: list[bytes]) -> None:
        size_text, ext, signature = line.partition(_SIGNATURE_EXT)
        if (
            not ext
            or not size_text
            or len(size_text) > 16
            or not _HEX.issuperset(size_text)
            or len(signature) != _SIGNATURE_LENGTH
        ):
            raise ChunkFramingError("a signed chunk header must be '<hex size>;chunk-signature=<64 hex>'")
        size = int(size_text, 16)
        if size > self._max_chunk_size:
            raise ChunkFramingError(f"a chunk of {size} bytes exceeds {self._max_chunk_size}")
        self._size_text = size_text
        if size:
            self._remaining = size
            self._chunk.clear()
            self._state = _DATA
            return
        out.append(self._header(EMPTY_SHA256))
        self._state = _TRAILER if self._trailer else _FINAL_END

    def _header(self, chunk_sha256: str) -> bytes:
        k = self._key
        self._previous = chunk_signature(k.signing_key, k.amz_date, k.scope, self._previous, chunk_sha256)
        return self._size_text + _SIGNATURE_EXT + self._previous.encode() + b"\r\n"

    def _signed_chunk(self) -> bytes:
        data = bytes(self._chunk)
        self._chunk.clear()
        return self._header(hashlib.sha256(data).hexdigest()) + data + b"\r\n"

    def _on_trailer_line(self, line: bytes, out: list[bytes]) -> None:
        if not line:
            out.append(b"\r\n")
            # A blank line may separate the final chunk from the trailer; the one after it ends the body.
            if self._fields or self._trailer_signed:
                self._state = _DONE
            return
        name_bytes, colon, value_bytes = line.partition(b":")
        if not colon:
            raise ChunkFramingError("a trailer line must be 'name:value'")
        name = name_bytes.strip().lower().decode("ascii", "replace")
        if name == TRAILER_SIGNATURE:
            if len(value_bytes) != _SIGNATURE_LENGTH or self._trailer_signed:
                raise ChunkFramingError("x-amz-trailer-signature must be 64 hex digits, once")
            k = self._key
            signature = trailer_signature(k.signing_key, k.amz_date, k.scope, self._previous, self._fields)
            out.append(name_bytes + b":" + signature.encode() + b"\r\n")
            self._trailer_signed = True
            return
        if self._trailer_signed:
            raise ChunkFramingError("no trailer field may follow x-amz-trailer-signature")
        self._fields.append((name, value_bytes.strip().decode("ascii", "replace")))
        out.append(line + b"\r\n")
