"""The upstream HTTP/1.1 client against scripted servers on real sockets: framing, pooling, failures."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from support.certs import self_signed_cert

from proxy.s3.httpclient import (
    HIGH_WATER,
    ConnectionClosed,
    Pool,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    request_head,
)


class Peer:
    """One connection as the scripted server sees it."""

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    async def head(self) -> bytes:
        """The next request head, recorded on the server."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.server.heads.append(head)
        return head

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Handler = Callable[[Peer], Awaitable[None]]


class Server:
    """A TCP server running `handler` per connection, counting connections and request heads."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(Peer(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client hung up, or the test ended
        finally:
            writer.close()


def pool(**overrides: float) -> Pool:
    options: dict = {"limit": 8, "connect_timeout": 2.0, "read_timeout": 2.0, "ssl_context": None}
    return Pool(**{**options, **overrides})


async def get(
    p: Pool, port: int, method: str = "GET", body: object = None, **headers: str
) -> UpstreamResponse:
    head = request_head(method, "/bucket/key", {"host": f"127.0.0.1:{port}", **headers})
    return await p.request("127.0.0.1", port, False, head, body)  # type: ignore[arg-type]


async def body_of(response: UpstreamResponse) -> bytes:
    try:
        return await response.content.read()
    finally:
        response.release()


async def serving(*answers: bytes) -> Server:
    """A server giving `answers` in turn, one per request, on whichever connection asks."""
    queue = list(answers)

    async def handler(peer: Peer) -> None:
        while queue:
            await peer.head()
            await peer.send(queue.pop(0))
        await peer.reader.read()  # hold the connection open until the client closes it

    return Server(handler)


async def test_bodies_by_length_and_chunked_share_one_kept_alive_connection() -> None:
    async with await serving(
        b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "a"\r\n\r\nhello',
        b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ) as server:
        p = pool()
        first = await get(p, server.port)
        assert (first.status, first.reason, first.content_length) == (200, "OK", 5)
        assert first.headers["etag"] == '"a"'
        assert await body_of(first) == b"hello"
        second = await get(p, server.port)
        assert (second.status, second.reason, second.content_length) == (206, "Partial Content", None)
        assert await body_of(second) == b"abcde"
        assert await body_of(await get(p, server.port, "DELETE")) == b""
        assert server.connections == 1
        assert [h.split(b" ")[0] for h in server.heads] == [b"GET", b"GET", b"DELETE"]
        await p.close()


async def test_a_head_answer_has_no_body_whatever_its_length_says() -> None:
    async with await serving(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ) as server:
        p = pool()
        head = await get(p, server.port, "HEAD")
        assert head.content_length == 1048576
        assert await body_of(head) == b""
        assert await body_of(await get(p, server.port)) == b"ok"
        assert server.connections == 1
        await p.close()


async def test_an_interim_100_continue_is_skipped() -> None:
    async with await serving(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    ) as server:
        p = pool()
        response = await get(p, server.port)
        assert response.status == 200
        assert await body_of(response) == b"x"
        await p.close()


async def test_connection_close_is_honoured_and_a_body_may_end_with_the_connection() -> None:

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")

    async with Server(handler) as server:
        p = pool()
        assert await body_of(await get(p, server.port)) == b"until the end"
        assert await body_of(await get(p, server.port)) == b"until the end"
        assert server.connections == 2
        await p.close()


async def test_a_body_shorter_than_its_length_is_an_error_never_a_short_object() -> None:

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

    async with Server(handler) as server:
        p = pool()
        response = await get(p, server.port)
        with pytest.raises(ConnectionClosed):
            await body_of(response)
        await p.close()


async def test_a_kept_alive_connection_the_server_dropped_is_replaced_for_a_bodiless_request() -> None:

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        # Drop the connection the moment the next request arrives, as a server timing out idle ones.
        await peer.head()

    async with Server(handler) as server:
        p = pool()
        assert await body_of(await get(p, server.port)) == b"ok"
        assert await body_of(await get(p, server.port)) == b"ok"
        assert server.connections == 2
        await p.close()


async def test_a_streamed_body_is_not_sent_twice_when_its_connection_drops() -> None:

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await peer.head()

    async def body() -> AsyncIterator[bytes]:
        yield b"12345"

    async with Server(handler) as server:
        p = pool()
        assert await body_of(await get(p, server.port)) == b"ok"
        with pytest.raises(UpstreamError):
            response = await get(p, server.port, "PUT", body(), **{"content-length": "5"})
            await body_of(response)
        assert server.connections == 1
        await p.close()


async def test_a_silent_bucket_times_out_on_the_head_and_on_the_body() -> None:

    async def handler(peer: Peer) -> None:
        head = await peer.head()
        if b"/body" in head:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await peer.reader.read()

    async with Server(handler) as server:
        p = pool(read_timeout=0.3)
        with pytest.raises(UpstreamTimeout):
            await get(p, server.port)
        head = request_head("GET", "/body", {"host": "x"})
        response = await p.request("127.0.0.1", server.port, False, head, None)
        with pytest.raises(UpstreamTimeout):
            await body_of(response)
        await p.close()


async def test_an_unreachable_bucket_is_an_upstream_error() -> None:
    p = pool()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await get(p, 1)
    await p.close()


def test_a_line_break_in_a_header_is_refused() -> None:
    with pytest.raises(ValueError):
        request_head("GET", "/", {"host": "x", "x-amz-meta-a": "b\r\nInjected: yes"})
    with pytest.raises(ValueError):
        request_head("GET", "/", {"host\nx": "y"})
    assert request_head("GET", "/k", {"host": "x"}) == b"GET /k HTTP/1.1\r\nhost: x\r\n\r\n"


async def test_a_streamed_body_goes_out_with_its_head_and_the_answer_follows() -> None:
    received = bytearray()

    async def handler(peer: Peer) -> None:
        await peer.head()
        received.extend(await peer.reader.readexactly(3 * 65536))
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await peer.reader.read()

    async def body() -> AsyncIterator[bytes]:
        for n in range(3):
            yield bytes([n]) * 65536

    async with Server(handler) as server:
        p = pool()
        response = await get(p, server.port, "PUT", body(), **{"content-length": str(3 * 65536)})
        assert response.status == 200
        assert await body_of(response) == b""
        assert received == b"".join(bytes([n]) * 65536 for n in range(3))
        await p.close()


async def test_a_failing_body_keeps_its_own_error_as_the_cause() -> None:

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.reader.read()

    class BadChunk(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        raise BadChunk("signature mismatch")

    async with Server(handler) as server:
        p = pool()
        with pytest.raises(UpstreamError) as caught:
            await get(p, server.port, "PUT", body(), **{"content-length": "100"})
        assert isinstance(caught.value.__cause__, BadChunk)
        await p.close()


async def test_an_early_answer_is_returned_while_the_body_is_still_being_sent() -> None:

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\ndenied")
        await asyncio.sleep(0.5)

    never_ends = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1024
        await never_ends.wait()
        yield b"never"

    async with Server(handler) as server:
        p = pool()
        response = await get(p, server.port, "PUT", body(), **{"content-length": "999999"})
        assert response.status == 403
        assert await body_of(response) == b"denied"
        await p.close()


async def test_a_slow_consumer_holds_the_bucket_back() -> None:
    size = 16 * HIGH_WATER

    async def handler(peer: Peer) -> None:
        await peer.head()
        peer.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b"z" * 65536
        for _ in range(size // len(piece)):
            await peer.send(piece)

    async with Server(handler) as server:
        p = pool()
        response = await get(p, server.port)
        await asyncio.sleep(0.5)  # the server would send it all now if nothing held it back
        queued = response.content._size
        assert 0 < queued <= HIGH_WATER + 1024 * 1024  # one socket read past the mark at most
        total = 0
        async for piece in response.content.iter_any():
            total += len(piece)
        response.release()
        assert total == size
        await p.close()


async def test_at_most_limit_requests_are_in_flight_and_a_released_answer_frees_its_slot() -> None:
    async with await serving(*[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1"] * 2) as server:
        p = pool(limit=1)
        first = await get(p, server.port)
        waiting = asyncio.ensure_future(get(p, server.port))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert await body_of(first) == b"1"
        second = await asyncio.wait_for(waiting, 2)
        assert await body_of(second) == b"1"
        await p.close()


async def test_an_unread_answer_closes_its_connection_instead_of_pooling_it() -> None:
    async with await serving(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1",
    ) as server:
        p = pool()
        (await get(p, server.port)).release()  # body never read
        assert await body_of(await get(p, server.port)) == b"1"
        assert server.connections == 2
        await p.close()


async def test_a_cancelled_request_closes_its_connection(tmp_path: Path) -> None:
    closed = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.reader.read()
        closed.set()

    async with Server(handler) as server:
        p = pool()
        task = asyncio.ensure_future(get(p, server.port))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 2)
        await p.close()


async def test_tls_upstream_is_verified(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")

    async with Server(handler, tls=server_context) as server:
        head = request_head("GET", "/", {"host": f"localhost:{server.port}"})
        trusting = pool(ssl_context=ssl.create_default_context(cafile=str(cert)))
        response = await trusting.request("localhost", server.port, True, head, None)
        assert await body_of(response) == b"secure"
        await trusting.close()

        default = pool()  # the system's roots do not know this certificate
        with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
            await default.request("localhost", server.port, True, head, None)
        await default.close()


async def test_an_idle_connection_is_closed_once_its_keep_alive_ends_without_a_new_request() -> None:
    """After a burst, the pool lets its sockets go by itself, as a server closes idle connections."""
    closed: list[Peer] = []
    both_closed = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.head()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await peer.reader.read()  # returns when the client closes
        closed.append(peer)
        if len(closed) == 2:
            both_closed.set()

    async with Server(handler) as server:
        p = pool(keepalive=0.2)
        first, second = await asyncio.gather(get(p, server.port), get(p, server.port))
        assert [await body_of(first), await body_of(second)] == [b"ok", b"ok"]
        assert server.connections == 2
        async with asyncio.timeout(2):
            await both_closed.wait()
        await asyncio.sleep(0.1)
        assert not p._open and not any(p._idle.values())
        await p.close()
