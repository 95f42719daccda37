"""Hands a body's bytes to splice(2) between the client's and the bucket's sockets, through aiohttp.

Both directions work the same way: take what aiohttp has already read off the source, stop its
transport reading, flush what aiohttp has queued for the sink, and let the kernel move the rest.
The HTTP parser on the source side never sees those bytes, so that connection cannot carry another
message afterwards: a download closes its upstream connection, an upload answers `Connection: close`.
Bodies that cannot be spliced (TLS on either leg, unknown length) take the ordinary loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import payload, web
from aiohttp.abc import AbstractStreamWriter

from proxy.s3 import splice
from proxy.s3.errors import S3Error

# Below this a body goes through the loop: splicing costs a pipe and an unpooled connection.
MIN_BYTES = 1024 * 1024
# Set on a request whose body was spliced: its connection must close after the response.
CLOSE_AFTER = "grantgate.close_after"


async def download(
    request: web.Request,
    response: web.StreamResponse,
    upstream: aiohttp.ClientResponse,
    on_moved: Callable[[int], None],
) -> bool:
    """Relay a prepared response's body from the bucket to the client in the kernel; False (nothing
    done) when it cannot be spliced. Raises splice.SourceClosed/SourceStalled if the bucket falls short."""
    length, connection = upstream.content_length, upstream.connection
    if length is None or length < MIN_BYTES or connection is None:
        return False
    source = splice.plain_socket_fd(connection.transport)
    sink = splice.plain_socket_fd(request.transport)
    if source is None or sink is None:
        return False
    head = _take_buffered(upstream.content)
    rest = length - len(head)
    if rest:  # else aiohttp has read it all, and its parser has no body left to pause
        connection.protocol.pause_reading()
    try:
        on_moved(len(head))
        await _flush(request.writer, head)
        timeout = getattr(connection.protocol, "read_timeout", None)
        await splice.splice(source, sink, rest, idle_timeout=timeout, on_moved=on_moved)
    finally:
        upstream.close()  # its parser still waits for the body it never saw: never pool it
    return True


class Upload(payload.Payload):
    """A plain upload body for aiohttp's client: spliced from the client's socket when the upstream
    connection aiohttp picks turns out to be plaintext, read through `fallback` otherwise.

    `failure()` keeps the error that stopped it (aiohttp wraps whatever a body raises), so the
    listener can answer with it: an S3Error (a revoked grant), or ConnectionResetError (client gone).
    """

    def __init__(
        self,
        request: web.Request,
        length: int,
        fallback: AsyncIterator[bytes],
        on_moved: Callable[[int], None],
        idle_timeout: float,
    ) -> None:
        super().__init__(None)
        self._size = length
        self._request = request
        self._fallback = fallback
        self._on_moved = on_moved
        self._idle_timeout = idle_timeout
        self._failure: BaseException | None = None

    def failure(self) -> BaseException | None:
        inner = getattr(self._fallback, "failure", None)
        return self._failure or (inner() if inner else None)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("an upload body is streamed, never decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        request = self._request
        sink = splice.plain_socket_fd(_transport(writer))
        source = splice.plain_socket_fd(request.transport)
        if sink is None or source is None:
            async for piece in self._fallback:
                await writer.write(piece)
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


def _hand_back(request: web.Request, complete: bool) -> None:
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


def _transport(writer: AbstractStreamWriter) -> Any:
    # aiohttp's StreamWriter (server and client alike) has it; the abstract class does not declare it.
    return getattr(writer, "transport", None)


async def _flush(writer: AbstractStreamWriter, head: bytes) -> None:
    """Send the headers and `head` through aiohttp, and wait until the socket has taken all of it:
    spliced bytes must not overtake anything still queued in the transport."""
    transport = _transport(writer)
    transport.set_write_buffer_limits(high=0)  # so drain() waits for an empty buffer
    try:
        if head:
            await writer.write(head)
        else:
            writer.send_headers()
        await writer.drain()
    finally:
        transport.set_write_buffer_limits()
