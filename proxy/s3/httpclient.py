"""The upstream leg's HTTP/1.1 client: pooled keep-alive connections, httptools parsing, streamed bodies.

The gateway sends one kind of request to one endpoint, already signed, and relays the answer. A
general client (aiohttp's) spends most of a small request's time on what this leg never needs:
cookies, redirects, proxies, tracing, URL building and re-quoting. This one writes the request head
in one call, parses the answer with llhttp (httptools, as uvicorn does), and hands the body over
with flow control, so a multi-GB answer never sits in memory and a small one costs a few callbacks.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

# Read no further ahead of the consumer than this: a fast bucket and a slow client must not fill memory.
HIGH_WATER = 2 * 1024 * 1024
LOW_WATER = 512 * 1024
# An idle pooled connection is closed this long after its last use rather than reused: servers drop
# idle connections after a while (S3 after about 20 s), a request sent on one just dropped fails, and a
# burst of requests must not hold its sockets for ever once it is over.
KEEPALIVE_SECONDS = 15.0
# Header names and values reach the head verbatim; a line break in one would split the request.
_UNSAFE = re.compile(r"[\r\n\x00]")


class UpstreamError(Exception):
    """The bucket could not be reached, broke the connection, or answered what is not HTTP."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The bucket went silent for longer than the read timeout."""


# A streamed body's pieces: slices of what arrived may go out as views, never copied.
Piece = bytes | memoryview


class BodyWriter(Protocol):
    """What a streamed request body writes through (the shape of aiohttp's writers, for splice)."""

    transport: asyncio.Transport

    async def write(self, data: Piece) -> None: ...
    def send_headers(self) -> None: ...
    async def drain(self) -> None: ...


class StreamedBody(Protocol):
    """A request body that sends itself (a spliced upload), given the connection's writer."""

    async def send(self, writer: BodyWriter) -> None: ...


Body = bytes | AsyncIterable[Piece] | StreamedBody | None


class BodyReader:
    """The response body as it arrives: bytes queued by the connection, taken by the relay."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._pieces: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- fed by the connection

    def feed(self, data: bytes) -> None:
        self._pieces.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._connection.throttle(True)
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._eof:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- taken by the consumer

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._pieces

    def read_nowait(self) -> bytes:
        """Everything queued now, possibly b""; never waits."""
        if not self._pieces:
            return b""
        data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        self._pieces.clear()
        self._size = 0
        self._connection.throttle(False)
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Whatever has arrived, as soon as it has, until the body ends; raises if it ends short."""
        while True:
            if self._pieces:
                # One piece at a time, not joined: a join copies every byte once more, and pieces
                # already arrive coalesced per socket read.
                piece = self._pieces.popleft()
                self._size -= len(piece)
                if self._size <= LOW_WATER:
                    self._connection.throttle(False)
                yield piece
            elif self._error is not None:
                raise self._error
            elif self._eof:
                return
            else:
                self._waiter = self._connection.loop.create_future()
                try:
                    async with asyncio.timeout(self._connection.read_timeout):
                        await self._waiter
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"no data from the bucket for {self._connection.read_timeout} s"
                    ) from None

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.iter_any()])


class UpstreamResponse:
    """Status and headers of the bucket's answer, its body reader, and the connection under it."""

    def __init__(self, connection: Connection, status: int, reason: str, headers: CIMultiDict[str]) -> None:
        self.connection = connection
        self.status = status
        self.reason = reason
        self.headers = CIMultiDictProxy(headers)
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.content = BodyReader(connection)
        self._released = False

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.connection.transport

    @property
    def read_timeout(self) -> float:
        return self.connection.read_timeout

    def pause_reading(self) -> None:
        """Stop reading the socket for good (the body is about to be spliced past the parser)."""
        self.connection.hold()

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if it can carry another request.
        Only the first call counts (the relay and its error paths may both release)."""
        if not self._released:
            self._released = True
            self.connection.finished(self)

    def close(self) -> None:
        self.connection.close()


class Connection(asyncio.Protocol):
    """One keep-alive connection to the bucket, carrying one request at a time."""

    def __init__(self, pool: Pool, key: tuple[str, int, bool]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.read_timeout = pool.read_timeout
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._reason = ""
        self._keep_alive = False
        self._head_only = False
        self._complete = False
        self._received = False
        self._closed = False
        self._throttled = False
        self._held = False
        self._can_write: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self._received = True
        if self._parser is None:  # nothing asked: a server talking out of turn
            self._fail(UpstreamError("the bucket sent data that answers no request"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the bucket's answer is not valid HTTP: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        response = self._response
        if response is not None and not self._complete and self._body_until_close():
            self._complete = True
            response.content.feed_eof()
        else:
            detail = f": {exc}" if exc else ""
            self._fail(ConnectionClosed(f"the bucket closed the connection{detail}"))
        self._writable()
        self.pool.forget(self)

    def pause_writing(self) -> None:
        self._can_write = self.loop.create_future()

    def resume_writing(self) -> None:
        self._writable()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = CIMultiDict()
        self._reason = ""

    def on_status(self, reason: bytes) -> None:
        self._reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue): the real one follows
        response = UpstreamResponse(self, status, self._reason, self._headers)
        self._response = response
        self._keep_alive = self._parser.should_keep_alive()
        if self._head is not None and not self._head.done():
            self._head.set_result(response)
        if self._head_only:
            # llhttp cannot be told a HEAD answer has no body; this parser now waits for one, so the
            # next request gets a new parser.
            self._parser = None
            self._message_done(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response.content.feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is not None:  # None after an interim 1xx
            assert self._parser is not None
            self._keep_alive = self._parser.should_keep_alive()
            self._message_done(response)

    # -- requests

    async def request(self, head: bytes, body: Body) -> UpstreamResponse:
        """Send one request and wait for the answer's head (the body is read from the response)."""
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head.startswith(b"HEAD ")
        head_waiter: asyncio.Future[UpstreamResponse] = self.loop.create_future()
        self._head = head_waiter
        self._response, self._complete, self._received = None, False, False
        transport = self.transport
        assert transport is not None
        try:
            if body is None or isinstance(body, bytes):
                transport.write(head + body if body else head)
            else:
                self._sender = sender = self.loop.create_task(self._send_body(head, body))
                await asyncio.wait((sender, head_waiter), return_when=asyncio.FIRST_COMPLETED)
                if not head_waiter.done() and not sender.cancelled() and sender.exception() is not None:
                    # The body's own error (a bad chunk, the client gone) stays the cause.
                    exc = sender.exception()
                    raise UpstreamError(f"sending the request body failed: {exc!r}") from exc
            # A bare timer, not asyncio.timeout(): this runs once per request and is most of its cost.
            timer = self.loop.call_later(self.read_timeout, self._head_timed_out, head_waiter)
            try:
                return await head_waiter
            finally:
                timer.cancel()
        except BaseException:
            self.close()  # half a request went out (or was cancelled): the connection is spent
            raise

    def _head_timed_out(self, waiter: asyncio.Future[UpstreamResponse]) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout(f"no answer from the bucket within {self.read_timeout} s"))

    @property
    def answered(self) -> bool:
        """Whether any byte of an answer arrived for the current request."""
        return self._received

    async def _send_body(self, head: bytes, body: AsyncIterable[Piece] | StreamedBody) -> None:
        writer = _Writer(self, head)
        if isinstance(body, AsyncIterable):
            async for piece in body:
                await writer.write(piece)
            writer.send_headers()  # an empty stream still sends its head
        else:
            await body.send(writer)

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionClosed("the bucket closed the connection while the body was sent")
        if self._can_write is not None:
            await self._can_write
            if self._closed:
                raise ConnectionClosed("the bucket closed the connection while the body was sent")

    def _writable(self) -> None:
        waiter, self._can_write = self._can_write, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _message_done(self, response: UpstreamResponse) -> None:
        self._complete = True
        response.content.feed_eof()

    def _body_until_close(self) -> bool:
        """An answer framed by neither Content-Length nor chunked coding ends when the connection does."""
        response = self._response
        if response is None or self._head_only or response.status in (204, 304):
            return False
        return "Content-Length" not in response.headers and "chunked" not in response.headers.get(
            "Transfer-Encoding", ""
        )

    def _fail(self, error: UpstreamError) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved here: a request that timed out never awaits it again
        if self._response is not None:
            self._response.content.fail(error)
        self.close()

    # -- flow control and ownership

    def throttle(self, on: bool) -> None:
        if self.transport is None or self._held or on == self._throttled:
            return
        self._throttled = on
        if on:
            self.transport.pause_reading()
        elif not self._closed:
            self.transport.resume_reading()

    def hold(self) -> None:
        self._held = True
        if self.transport is not None and not self._throttled:
            self.transport.pause_reading()

    def finished(self, response: UpstreamResponse) -> None:
        reusable = (
            self._drop_sender()
            and self._complete
            and self._keep_alive
            and not self._held
            and not self._closed
            and response.content.at_eof
        )
        self._response, self._head = None, None
        # Whatever arrives on an idle connection answers nothing: with no parser it is refused.
        self._parser = None
        if not reusable:
            self.close()
        self.pool.done(self, reusable)

    def _drop_sender(self) -> bool:
        """Stop sending a body still going out; True if there was none or it was sent whole."""
        sender, self._sender = self._sender, None
        if sender is None:
            return True
        if not sender.done():
            sender.cancel()
            return False
        return not sender.cancelled() and sender.exception() is None  # retrieved: no stray warning

    def close(self) -> None:
        self._drop_sender()
        if self.transport is not None and not self._closed:
            self.transport.close()
        self._closed = True

    @property
    def usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()


class ConnectionClosed(UpstreamError, ConnectionResetError):
    """The bucket closed the connection before the answer was complete."""


class _Writer:
    """A request body's writer: the head goes out with the first piece, then each piece as it comes."""

    def __init__(self, connection: Connection, head: bytes) -> None:
        self._connection = connection
        self._head: bytes | None = head
        assert connection.transport is not None
        self.transport = connection.transport

    async def write(self, data: Piece) -> None:
        head, self._head = self._head, None
        self.transport.write(head + data if head else data)
        await self._connection.drain()

    def send_headers(self) -> None:
        head, self._head = self._head, None
        if head:
            self.transport.write(head)

    async def drain(self) -> None:
        await self._connection.drain()


class Pool:
    """Keep-alive connections per (host, port, tls), at most `limit` in use at once."""

    def __init__(
        self,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._keepalive = keepalive
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, int, bool], list[Connection]] = {}
        self._open: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def request(self, host: str, port: int, tls: bool, head: bytes, body: Body) -> UpstreamResponse:
        """Send a request and return the answer's head; the caller must `release()` the answer."""
        await self._slots.acquire()
        try:
            response = await self._request_once(host, port, tls, head, body)
        except BaseException:
            self._slots.release()
            raise
        # The slot is given back with the connection, when the answer is released.
        return response

    async def _request_once(
        self, host: str, port: int, tls: bool, head: bytes, body: Body
    ) -> UpstreamResponse:
        connection = self._pooled((host, port, tls))
        if connection is not None:
            try:
                return await connection.request(head, body)
            except ConnectionClosed:
                # A kept-alive connection the server dropped while idle: the request never reached
                # it, so it is sent once more on a new connection when its body can be sent again.
                if connection.answered or not (body is None or isinstance(body, bytes)):
                    raise
        connection = await self._connect(host, port, tls)
        return await connection.request(head, body)

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _pooled(self, key: tuple[str, int, bool]) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if self._fresh(connection, now):
                return connection
            connection.close()
        return None

    def _fresh(self, connection: Connection, now: float) -> bool:
        return connection.usable and now - connection.idle_since < self._keepalive

    def _sweep_later(self, delay: float) -> None:
        # One timer for the whole pool, not one per request, armed only while connections idle.
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for the keep-alive period, and come back for the next to expire."""
        self._sweeper = None
        now = time.monotonic()
        stale = [c for idle in self._idle.values() for c in idle if not self._fresh(c, now)]
        for connection in stale:
            self.forget(connection)
            connection.close()
        oldest = min((c.idle_since for idle in self._idle.values() for c in idle), default=None)
        if oldest is not None:
            self._sweep_later(max(oldest + self._keepalive - now, 0.05))

    async def _connect(self, host: str, port: int, tls: bool) -> Connection:
        loop = asyncio.get_running_loop()
        key = (host, port, tls)
        context = self._tls_context() if tls else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self, key),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise UpstreamError(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect to {host}:{port}: {exc}") from exc
        self._open.add(connection)
        return connection

    def done(self, connection: Connection, reusable: bool) -> None:
        """An answer was released: its slot frees, and its connection idles here or is forgotten."""
        if reusable:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.key, []).append(connection)
            self._sweep_later(self._keepalive)
        else:
            self._open.discard(connection)
        self._slots.release()

    def forget(self, connection: Connection) -> None:
        """A connection closed (by either side): it is no longer open, idle or not."""
        self._open.discard(connection)
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks


def request_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    """The request line and headers, refused if any of them would break the head's framing."""
    if _UNSAFE.search("".join([method, target, *headers.keys(), *headers.values()])):
        raise ValueError("the request line or a header holds a line break")
    lines = [f"{method} {target} HTTP/1.1", *[f"{name}: {value}" for name, value in headers.items()], "", ""]
    return "\r\n".join(lines).encode("latin-1")
