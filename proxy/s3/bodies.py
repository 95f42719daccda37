"""Request bodies: what goes upstream and how it is framed, verified and decoded as it streams.

A plain body is passed through (spliced in the kernel when nothing needs to see its bytes), hashed when
its SHA-256 is to be verified; an aws-chunked body is decoded and its signatures checked piece by piece.
Every wrapper keeps the S3Error that stopped it, so the client gets that error, not a generic failure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator, Callable

from aiohttp import web

from proxy.errors import S3Error
from proxy.s3 import forwarding, passthrough, sigv4
from proxy.s3.checksums import new_checksum
from proxy.s3.chunked import ChunkedDecoder, ChunkedSpec, chunked_spec
from proxy.s3.httpclient import Body, Piece
from proxy.s3.request import RequestHead
from proxy.s3.xmlbodies import MAX_DELETE_BODY, delete_objects_keys

# An empty object's aws-chunked framing: a final chunk and at most a trailer, never more than this.
EMPTY_CHUNKED_LIMIT = 64 * 1024


async def key_list(
    request: web.BaseRequest, signed: sigv4.SignedRequest, moved: Callable[[int], None]
) -> tuple[bytes, tuple[str, ...]]:
    """A DeleteObjects body (small, read whole, its hash checked) and the keys it names."""
    too_large = S3Error.malformed_xml(f"request body larger than {MAX_DELETE_BODY} bytes")
    data = await read_bounded(request, MAX_DELETE_BODY, too_large)
    moved(len(data))
    if forwarding.is_hex_sha256(signed.payload_hash):
        check_sha256(data, signed.payload_hash)
    return data, tuple(key for key, _version in delete_objects_keys(data))


async def upstream_body(
    request: web.BaseRequest,
    head: RequestHead,
    signed: sigv4.SignedRequest,
    signing_key: bytes,
    moved: Callable[[int], None],
    *,
    verify_sha256: bool,
    read_timeout: float,
) -> tuple[Body, forwarding.Framing]:
    """The body to send upstream and how it is framed. `moved` counts what arrives (and re-checks the
    grant as it goes)."""
    spec = chunked_spec(head, signed, signing_key)
    if spec is not None and spec.decoded_length == 0:
        # Nothing to hold back: an empty object would complete upstream with its headers, so the
        # framing (signatures, trailer) is verified whole before anything is sent.
        decoder = ChunkedDecoder(spec)
        too_long = S3Error.incomplete_body("The aws-chunked body is longer than its declared length of 0.")
        data = await read_bounded(request, EMPTY_CHUNKED_LIMIT, too_long)
        moved(len(data))
        decoder.feed(data)
        decoder.finish()
        return None, forwarding.decoded_framing(spec)
    if spec is not None:
        return decoded(request, spec, moved)
    length = forwarding.content_length(head.headers)
    if length is None:
        if request.body_exists:
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
        length = 0
    declared = signed.payload_hash if forwarding.is_hex_sha256(signed.payload_hash) else None
    if length == 0:
        if declared is not None:
            check_sha256(b"", declared)
        return None, forwarding.plain_framing(signed.payload_hash, 0)
    arriving: AsyncIterable[bytes] = counted(request, moved)
    verify = declared is not None and verify_sha256
    if declared is not None and verify:
        arriving = sha256_verified(arriving, declared)
    body = BodyStream(arriving)  # keeps the S3Error of a bad digest or of a revoked grant
    framing = forwarding.plain_framing(signed.payload_hash, length)
    if verify or length < passthrough.MIN_BYTES:
        return body, framing
    # Nothing to compute over the bytes: the kernel may move them (when both legs are plaintext).
    return passthrough.Upload(request, length, body, moved, read_timeout), framing


def decoded(
    request: web.BaseRequest, spec: ChunkedSpec, moved: Callable[[int], None]
) -> tuple[AsyncIterable[Piece], forwarding.Framing]:
    """An aws-chunked body decoded (signatures checked); re-framed when a checksum trailer must go on."""
    decoder = ChunkedDecoder(spec)
    body = BodyStream(decode(request, decoder, moved))
    if spec.trailer_names:
        algorithm = spec.trailer_names[0].removeprefix("x-amz-checksum-")
        digest_size = len(new_checksum(algorithm).digest())
        framing = forwarding.trailer_framing(spec, digest_size)
        reframed = forwarding.reframe(body, lambda: decoder.trailer.items(), spec.decoded_length)
        return BodyStream(reframed, body), framing
    return body, forwarding.decoded_framing(spec)


async def decode(
    request: web.BaseRequest, decoder: ChunkedDecoder, moved: Callable[[int], None]
) -> AsyncIterator[bytes]:
    async for data in request.content.iter_any():
        moved(len(data))
        for piece in decoder.feed(data):
            yield piece
    for piece in decoder.finish():
        yield piece


async def counted(request: web.BaseRequest, moved: Callable[[int], None]) -> AsyncIterator[bytes]:
    async for data in request.content.iter_any():
        moved(len(data))
        yield data


async def sha256_verified(pieces: AsyncIterable[bytes], declared: str) -> AsyncIterator[bytes]:
    """Pass a body through while hashing it, holding back the last piece until the hash matches, so
    a body altered in transit never completes upstream even if the bucket does not check it."""
    digest = hashlib.sha256()
    held: bytes | None = None
    async for piece in pieces:
        digest.update(piece)
        if held is not None:
            yield held
        held = piece
    check_sha256_digest(digest.hexdigest(), declared)
    if held is not None:
        yield held


class BodyStream:
    """Wraps a body generator so an S3Error raised while the upstream client consumes it is kept.

    The client turns any exception in a request body into a generic upstream error; the caller must still
    get the precise S3 error (a bad chunk signature, a wrong checksum).
    """

    def __init__(self, inner: AsyncIterable[Piece], linked: BodyStream | None = None) -> None:
        self._inner = inner
        self._linked = linked
        self.error: S3Error | None = None

    def __aiter__(self) -> AsyncIterator[Piece]:
        return self._run()

    async def _run(self) -> AsyncIterator[Piece]:
        try:
            async for piece in self._inner:
                yield piece
        except S3Error as err:
            self.error = err
            raise

    def failure(self) -> S3Error | None:
        return self.error or (self._linked.failure() if self._linked else None)


def failure(body: Body) -> BaseException | None:
    """What stopped a body while the upstream client sent it, if anything."""
    return body.failure() if isinstance(body, BodyStream | passthrough.Upload) else None


async def read_bounded(request: web.BaseRequest, limit: int, too_large: S3Error) -> bytes:
    buf = bytearray()
    async for data in request.content.iter_any():
        buf += data
        if len(buf) > limit:
            raise too_large
    return bytes(buf)


def check_sha256(data: bytes, declared: str) -> None:
    check_sha256_digest(hashlib.sha256(data).hexdigest(), declared)


def check_sha256_digest(actual: str, declared: str) -> None:
    if not hmac.compare_digest(actual, declared.lower()):
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            400,
        )
