"""Hands a body's bytes to splice(2) between the client's and the bucket's sockets.

Both directions work the same way: take what the source's parser has already read, stop its
transport reading, flush what is queued for the sink, and let the kernel move the rest.
The HTTP parser on the source side never sees those bytes, so that connection cannot carry another
message afterwards: a download closes its upstream connection, an upload answers `Connection: close`.
Bodies that cannot be spliced (TLS on either leg, unknown length) take the ordinary loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from proxy.errors import S3Error
from proxy.s3 import splice
from proxy.s3.httpclient import BodyWriter, Piece, UpstreamResponse

# Below this a body goes through the loop: splicing costs a pipe and an unpooled connection.
MIN_BYTES = 1024 * 1024
# Set on a request whose body was spliced: its connection must close after the response.
CLOSE_AFTER = "grantgate.close_after"


async def download(
    request: web.BaseRequest,
    response: web.StreamResponse,
    upstream: UpstreamResponse,
    on_moved: Callable[[int], None],
) -> bool:
    """Relay a prepared response's body from the bucket to the client in the kernel; False (nothing
    done) when it cannot be spliced. Raises splice.SourceClosed/SourceStalled if the bucket falls short."""
    length = upstream.content_length
    if length is None or length < MIN_BYTES:
        return False
    source = splice.plain_socket_fd(upstream.transport)
    sink = splice.plain_socket_fd(request.transport)
    if source is None or sink is None:
        return False
    upstream.pause_reading()
    head = upstream.content.read_nowait()
    try:
        on_moved(len(head))
        await _flush(request.writer, head)
        rest = length - len(head)
        await splice.splice(source, sink, rest, idle_timeout=upstream.read_timeout, on_moved=on_moved)
    finally:
        upstream.close()  # its parser still waits for the body it never saw: never pool it
    return True


class Upload:
    """A plain upload body for the upstream client: spliced from the client's socket when the upstream
    connection is plaintext, read through `fallback` otherwise.

    `failure()` keeps the error that stopped it (aiohttp wraps whatever a body raises), so the
    listener can answer with it: an S3Error (a revoked grant), or ConnectionResetError (client gone).
    """

    def __init__(
        self,
        request: web.BaseRequest,
        length: int,
        fallback: AsyncIterable[Piece],
        on_moved: Callable[[int], None],
        idle_timeout: float,
    ) -> None:
        self._size = length
        self._request = request
        self._fallback = fallback
        self._on_moved = on_moved
        self._idle_timeout = idle_timeout
        self._failure: BaseException | None = None

    def failure(self) -> BaseException | None:
        inner = getattr(self._fallback, "failure", None)
        return self._failure or (inner() if inner else None)

    async def send(self, writer: BodyWriter) -> None:
        request = self._request
        sink = splice.plain_socket_fd(writer.transport)
        source = splice.plain_socket_fd(request.transport)
        if sink is None or source is None:
            async for piece in self._fallback:
                await writer.write(piece)
            writer.send_headers()
            return
        head = _take_buffered(request.content)
        rest = self._size - len(head)
        if rest:  # else aiohttp has read it all, and its parser has no body left to pause
            request.protocol.pause_reading()
            request[CLOSE_AFTER] = True
        complete = False
        try:
            self._on_moved(len(head))
            await _flush(writer, head)
            await splice.splice(source, sink, rest, idle_timeout=self._idle_timeout, on_moved=self._on_moved)
            complete = True
        except S3Error as err:
            self._failure = err
            raise
        except (splice.SourceClosed, splice.SourceStalled) as exc:
            self._failure = ConnectionResetError(f"client upload ended early: {exc}")
            raise
        finally:
            if rest:
                _hand_back(request, complete)


def _hand_back(request: web.BaseRequest, complete: bool) -> None:
    """Return the client's connection to aiohttp once a spliced upload ends. A complete body is the end
    of its input: aiohttp must not wait (it lingers up to 10 s) for bytes that went past it. A body cut
    short (a revoked grant) is read again, so aiohttp discards what the client is still sending and the
    client, once done sending, reads the error instead of blocking on a connection nobody reads."""
    if complete:
        request.content.feed_eof()
    else:
        request.protocol.resume_reading()


def _take_buffered(content: aiohttp.StreamReader) -> bytes:
    """Everything aiohttp has read of a body so far. Reading can resume its paused parser, which feeds
    bytes it held back into the buffer at once, so drain until a read finds nothing."""
    pieces = []
    while piece := content.read_nowait():
        pieces.append(piece)
    return b"".join(pieces)


async def _flush(writer: AbstractStreamWriter | BodyWriter, head: bytes) -> None:
    """Send the headers and `head`, and wait until the socket has taken all of it: spliced bytes
    must not overtake anything still queued in the transport."""
    # aiohttp's server StreamWriter has `transport` too; its abstract class does not declare it.
    transport: Any = getattr(writer, "transport", None)
    transport.set_write_buffer_limits(high=0)  # so drain() waits for an empty buffer
    try:
        if head:
            await writer.write(head)
        else:
            writer.send_headers()
        await writer.drain()
    finally:
        transport.set_write_buffer_limits()
