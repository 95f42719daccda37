"""aws-chunked request bodies: an incremental decoder that verifies chunk signatures and trailer checksums.

Pure and streaming: fed bytes as they arrive, it returns payload bytes only once they are verified, and
holds back the final payload byte until every check has passed (see ChunkedDecoder).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from proxy.errors import S3Error
from proxy.s3.checksums import Checksum, algorithm_for_header, new_checksum
from proxy.s3.request import RequestHead
from proxy.s3.sigv4 import (
    EMPTY_SHA256,
    STREAMING_MODES,
    STREAMING_SIGNED,
    STREAMING_UNSIGNED_TRAILER,
    SignedRequest,
)

MAX_OBJECT_SIZE = 5 * 1024**4  # S3's largest object, 5 TiB
TRAILER_SIGNATURE = "x-amz-trailer-signature"
_SIGNATURE_EXT = b"chunk-signature="
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_LOWER_HEX = frozenset(b"0123456789abcdef")
_MAX_SIZE_DIGITS = 16

# Decoder states.
_HEADER = 0  # expecting "hex-size[;chunk-signature=...]\r\n"
_DATA = 1  # inside a chunk's data
_DATA_END = 2  # expecting the "\r\n" after a chunk's data
_FINAL_END = 3  # signed mode without trailer: expecting the "\r\n" after the 0-size chunk
_TRAILER = 4  # trailer lines, ended by an empty line
_DONE = 5
_FINISHED = 6


@dataclass(frozen=True, slots=True)
class ChunkedSpec:
    mode: str
    decoded_length: int
    trailer_names: tuple[str, ...]
    signing_key: bytes | None = None
    seed_signature: str | None = None
    amz_date: str | None = None
    scope: str | None = None


def chunked_spec(head: RequestHead, signed: SignedRequest, signing_key: bytes) -> ChunkedSpec | None:
    """How to decode this request's body, or None when it is not aws-chunked.

    The Content-Encoding may lack `aws-chunked`: the payload-hash sentinel decides, as it does for S3.
    """
    mode = signed.payload_hash
    if mode not in STREAMING_MODES:
        return None
    decoded_length = _decoded_length(head)
    trailer_names = _trailer_names(head, mode)
    if mode == STREAMING_UNSIGNED_TRAILER:
        return ChunkedSpec(mode, decoded_length, trailer_names)
    return ChunkedSpec(
        mode, decoded_length, trailer_names, signing_key, signed.signature, signed.amz_date, signed.scope
    )


def _decoded_length(head: RequestHead) -> int:
    values = head.headers.getall("x-amz-decoded-content-length", ())
    if not values:
        raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
    text = values[0].strip()
    if len(values) > 1 or not text.isascii() or not text.isdigit() or len(text) > 20:
        raise S3Error.invalid_argument("x-amz-decoded-content-length must be a non-negative integer")
    length = int(text)
    if length > MAX_OBJECT_SIZE:
        raise S3Error.entity_too_large("Your proposed upload exceeds the maximum allowed size")
    return length


def _trailer_names(head: RequestHead, mode: str) -> tuple[str, ...]:
    raw = ",".join(head.headers.getall("x-amz-trailer", ()))
    names = tuple(n for n in (part.strip().lower() for part in raw.split(",")) if n)
    if not mode.endswith("-TRAILER"):
        if names:
            raise S3Error.invalid_argument(f"x-amz-trailer is not allowed with x-amz-content-sha256: {mode}")
        return ()
    if not names:
        raise S3Error.invalid_request(f"x-amz-trailer is required with x-amz-content-sha256: {mode}")
    if len(names) != 1 or algorithm_for_header(names[0]) is None:
        raise S3Error.invalid_argument(
            "x-amz-trailer must name exactly one checksum: x-amz-checksum-crc32, x-amz-checksum-crc32c, "
            "x-amz-checksum-crc64nvme, x-amz-checksum-sha1 or x-amz-checksum-sha256"
        )
    return names


def chunk_signature(signing_key: bytes, amz_date: str, scope: str, previous: str, chunk_sha256: str) -> str:
    """The signature of one aws-chunked chunk, chained from the previous one (the seed for the first)."""
    text = f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{EMPTY_SHA256}\n{chunk_sha256}"
    return hmac.digest(signing_key, text.encode(), "sha256").hex()


def trailer_signature(
    signing_key: bytes, amz_date: str, scope: str, previous: str, fields: list[tuple[str, str]]
) -> str:
    """The signature of the trailer fields, chained from the final (0-size) chunk's signature."""
    canonical = "".join(f"{name}:{value}\n" for name, value in fields)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    text = f"AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous}\n{digest}"
    return hmac.digest(signing_key, text.encode(), "sha256").hex()


def _malformed(message: str) -> S3Error:
    return S3Error.invalid_request(f"Malformed aws-chunked body: {message}")


def _malformed_trailer(message: str) -> S3Error:
    return S3Error(
        "MalformedTrailerError",
        f"The request contained trailing data that was not well-formed: {message}",
        400,
    )


class ChunkedDecoder:
    """Incremental aws-chunked decoder: feed() any split of the body, then finish() at its end.

    feed() returns payload bytes that are safe to forward: in signed modes only whole chunks whose
    signature verified. It never returns the payload's final byte; finish() does, and only after the
    last chunk signature, the trailer checksum and signature, and the total length all checked out.
    Forwarded upstream with Content-Length = decoded length, an upload that fails any check therefore
    cannot complete. Memory is bounded by max_chunk_size (signed modes) and max_line.
    """

    def __init__(
        self, spec: ChunkedSpec, *, max_chunk_size: int = 16 * 1024 * 1024, max_line: int = 4096
    ) -> None:
        self._spec = spec
        self._max_chunk_size = max_chunk_size
        self._max_line = max_line
        self._verifies_chunks = spec.mode != STREAMING_UNSIGNED_TRAILER
        if self._verifies_chunks and (
            spec.signing_key is None or spec.seed_signature is None or spec.amz_date is None or not spec.scope
        ):
            raise ValueError("signed aws-chunked modes need signing_key, seed_signature, amz_date and scope")
        self._key = spec.signing_key or b""
        self._amz_date = spec.amz_date or ""
        self._scope = spec.scope or ""
        self._previous = spec.seed_signature or ""
        self._has_trailer = spec.mode != STREAMING_SIGNED
        self._signed_trailer = self._verifies_chunks and self._has_trailer
        self._checksum: Checksum | None = None
        if spec.trailer_names:
            algorithm = algorithm_for_header(spec.trailer_names[0])
            if algorithm is None:
                raise ValueError(f"not a checksum trailer: {spec.trailer_names[0]}")
            self._checksum = new_checksum(algorithm)

        self._state = _HEADER
        self._line = bytearray()  # a header/trailer line split across feeds
        self._remaining = 0  # data bytes left in the current chunk
        self._chunk_signature = ""
        self._chunk_hash = hashlib.sha256()
        self._pending: list[bytes | memoryview] = []  # signed mode: the current chunk, until verified
        self._hold_from = max(spec.decoded_length - 1, 0)  # payload offset of the held-back tail
        self._released = 0
        self._tail = bytearray()
        self._blank_before_trailer = False
        self._trailer_signed = False
        self._error: S3Error | None = None
        self.decoded_bytes = 0
        self.trailer: dict[str, str] = {}  # checksum fields; the trailer signature is checked, not kept

    # --- public -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        if self._state == _FINISHED:
            raise RuntimeError("feed() after finish()")
        out: list[bytes] = []
        if data:
            try:
                self._consume(data if type(data) is bytes else bytes(data), out)
            except S3Error as exc:
                self._error = exc
                raise
        return out

    def finish(self) -> list[bytes]:
        if self._error is not None:
            raise self._error
        if self._state == _FINISHED:
            raise RuntimeError("finish() called twice")
        try:
            self._check_complete()
        except S3Error as exc:
            self._error = exc
            raise
        self._state = _FINISHED
        tail, self._tail = bytes(self._tail), bytearray()
        return [tail] if tail else []

    # --- parsing ----------------------------------------------------------------------------------

    def _consume(self, data: bytes, out: list[bytes]) -> None:
        end = len(data)
        view = memoryview(data)
        pos = 0
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                piece: bytes | memoryview = data if take == end else view[pos : pos + take]
                pos += take
                self._on_data(piece, out)
            elif state == _DONE:
                raise _malformed("unexpected data after the end of the body")
            else:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    self._buffer_partial_line(view[pos:])
                    return
                line = self._complete_line(data, pos, newline)
                pos = newline + 1
                self._on_line(line)

    def _buffer_partial_line(self, rest: memoryview) -> None:
        if len(self._line) + len(rest) > self._max_line + 1:
            raise self._line_too_long()
        self._line += rest

    def _complete_line(self, data: bytes, start: int, newline: int) -> bytes:
        if len(self._line) + newline - start > self._max_line + 1:
            raise self._line_too_long()
        if self._line:
            self._line += data[start:newline]
            line = bytes(self._line)
            self._line.clear()
        else:
            line = data[start:newline]
        if not line.endswith(b"\r"):
            raise _malformed("lines must end with CRLF")
        return line[:-1]

    def _line_too_long(self) -> S3Error:
        if self._state == _TRAILER:
            return _malformed_trailer(f"a trailer line is longer than {self._max_line} bytes")
        return _malformed(f"a chunk header line is longer than {self._max_line} bytes")

    def _on_line(self, line: bytes) -> None:
        state = self._state
        if state == _HEADER:
            self._on_chunk_header(line)
        elif state == _DATA_END:
            if line:
                raise _malformed("chunk data is longer than its declared size")
            self._state = _HEADER
        elif state == _FINAL_END:
            if line:
                raise _malformed("expected the end of the body after the final chunk")
            self._state = _DONE
        else:
            self._on_trailer_line(line)

    def _on_chunk_header(self, line: bytes) -> None:
        size_text, _, extension = line.partition(b";")
        if not size_text or len(size_text) > _MAX_SIZE_DIGITS or size_text.strip(_HEX_DIGITS):
            raise _malformed("invalid chunk size")
        size = int(size_text, 16)
        if self._verifies_chunks:
            self._chunk_signature = self._parse_chunk_signature(extension)
            if size > self._max_chunk_size:
                # Signed chunks are held whole until verified: their size bounds our memory.
                raise S3Error.invalid_request(
                    f"aws-chunked chunk of {size} bytes exceeds the limit of {self._max_chunk_size} bytes"
                )
        if self.decoded_bytes + size > self._spec.decoded_length:
            raise S3Error.incomplete_body(
                "The aws-chunked body is longer than x-amz-decoded-content-length declares."
            )
        if size:
            self._remaining = size
            self._chunk_hash = hashlib.sha256()
            self._state = _DATA
            return
        if self.decoded_bytes != self._spec.decoded_length:
            raise S3Error.incomplete_body()
        if self._verifies_chunks:
            self._verify_chunk(EMPTY_SHA256)
        self._state = _TRAILER if self._has_trailer else _FINAL_END

    @staticmethod
    def _parse_chunk_signature(extension: bytes) -> str:
        signature = extension[len(_SIGNATURE_EXT) :]
        if (
            not extension.startswith(_SIGNATURE_EXT)
            or len(signature) != 64
            or not _LOWER_HEX.issuperset(signature.lower())
        ):
            raise _malformed("a signed chunk needs ';chunk-signature=<64 hex digits>'")
        return signature.decode("ascii").lower()

    def _on_data(self, piece: bytes | memoryview, out: list[bytes]) -> None:
        size = len(piece)
        self._remaining -= size
        self.decoded_bytes += size
        if self._checksum is not None:
            self._checksum.update(piece)
        if not self._verifies_chunks:
            self._release(piece, out)
        else:
            self._chunk_hash.update(piece)
            self._pending.append(piece)
            if self._remaining == 0:
                self._verify_chunk(self._chunk_hash.hexdigest())
                for held in self._pending:
                    self._release(held, out)
                self._pending.clear()
        if self._remaining == 0:
            self._state = _DATA_END

    def _verify_chunk(self, chunk_sha256: str) -> None:
        expected = chunk_signature(self._key, self._amz_date, self._scope, self._previous, chunk_sha256)
        if not hmac.compare_digest(expected, self._chunk_signature):
            raise S3Error.signature_mismatch(
                "The chunk signature we calculated does not match the signature you provided."
            )
        self._previous = expected

    def _release(self, piece: bytes | memoryview, out: list[bytes]) -> None:
        size = len(piece)
        if self._released + size <= self._hold_from:
            out.append(piece if type(piece) is bytes else bytes(piece))
            self._released += size
            return
        keep = self._hold_from - self._released
        if keep > 0:
            out.append(bytes(piece[:keep]))
            self._released += keep
        self._tail += piece[max(keep, 0) :]

    def _on_trailer_line(self, line: bytes) -> None:
        if not line:
            if not self.trailer and not self._blank_before_trailer:
                # AWS's documented example puts an empty line between the final chunk and the
                # trailer; the SDKs do not. A trailer is mandatory here, so both are unambiguous.
                self._blank_before_trailer = True
                return
            self._check_trailer_complete()
            self._state = _DONE
            return
        name_bytes, colon, value_bytes = line.partition(b":")
        try:
            name = name_bytes.strip().lower().decode("ascii")
            value = value_bytes.strip().decode("ascii")
        except UnicodeDecodeError:
            raise _malformed_trailer("trailer fields must be ASCII") from None
        if not colon:
            raise _malformed_trailer("a trailer line must be 'name:value'")
        if self._trailer_signed:
            raise _malformed_trailer("no trailer field may follow x-amz-trailer-signature")
        if name == TRAILER_SIGNATURE and self._signed_trailer:
            self._verify_trailer_signature(value)
        elif name in self._spec.trailer_names and name not in self.trailer:
            self._check_checksum(name, value)
            self.trailer[name] = value
        else:
            raise _malformed_trailer(f"unexpected trailer field {name!r}")

    def _check_checksum(self, name: str, value: str) -> None:
        assert self._checksum is not None  # a declared trailer always has its checksum
        if not hmac.compare_digest(self._checksum.b64digest(), value):
            raise S3Error.bad_digest(f"The {name} you specified did not match the calculated checksum.")

    def _verify_trailer_signature(self, value: str) -> None:
        self._check_declared_trailers_present()
        expected = trailer_signature(
            self._key, self._amz_date, self._scope, self._previous, list(self.trailer.items())
        )
        if not hmac.compare_digest(expected, value.lower()):
            raise S3Error.signature_mismatch(
                "The trailer signature we calculated does not match the signature you provided."
            )
        self._trailer_signed = True

    def _check_declared_trailers_present(self) -> None:
        missing = [name for name in self._spec.trailer_names if name not in self.trailer]
        if missing:
            raise _malformed_trailer(f"the declared trailer {missing[0]} is missing")

    def _check_trailer_complete(self) -> None:
        self._check_declared_trailers_present()
        if self._signed_trailer and not self._trailer_signed:
            raise _malformed_trailer("x-amz-trailer-signature is missing")

    def _check_complete(self) -> None:
        if self._state == _DONE:
            return
        if self._state == _TRAILER and not self._line and (self.trailer or self._trailer_signed):
            # The documented framing ends after the last trailer line, without an empty line.
            self._check_trailer_complete()
            return
        if self._state == _TRAILER and not self._line:
            raise _malformed_trailer(f"the declared trailer {self._spec.trailer_names[0]} is missing")
        raise S3Error.incomplete_body()
