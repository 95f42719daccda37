"""splice(2) relaying between real TCP sockets: exact lengths, a short or silent source, a vanished sink."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket

import pytest

from proxy.s3 import splice

pytestmark = pytest.mark.skipif(not splice.AVAILABLE, reason="splice(2) is Linux-only")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected, non-blocking TCP sockets on loopback (splice needs real sockets, not a socketpair's
    Unix ones, to behave as it does in the gateway)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    for sock in (client, accepted):
        sock.setblocking(False)
    return client, accepted


@contextlib.asynccontextmanager
async def relay_sockets():
    """(writer into the source, source, sink, reader of the sink)."""
    feed, source = tcp_pair()
    sink, drain = tcp_pair()
    try:
        yield feed, source, sink, drain
    finally:
        for sock in (feed, source, sink, drain):
            sock.close()


async def send_all(sock: socket.socket, data: bytes, close: bool = True) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, data)
    if close:
        sock.shutdown(socket.SHUT_WR)


async def receive(sock: socket.socket, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while len(buf) < count:
        piece = await loop.sock_recv(sock, 1024 * 1024)
        if not piece:
            break
        buf += piece
    return bytes(buf)


async def test_moves_exactly_the_length_and_leaves_what_follows() -> None:
    body = secrets.token_bytes(5 * 1024 * 1024 + 123)
    trailing = b"next message"
    moved: list[int] = []
    async with relay_sockets() as (feed, source, sink, drain):
        sender = asyncio.create_task(send_all(feed, body + trailing, close=False))
        received = asyncio.create_task(receive(drain, len(body)))
        await splice.splice(source.fileno(), sink.fileno(), len(body), idle_timeout=5, on_moved=moved.append)
        await sender
        got = await received
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        assert sum(moved) == len(body)
        # The relay stopped at the length: what follows is still on the source, for its owner.
        assert await asyncio.get_running_loop().sock_recv(source, 100) == trailing


async def test_a_source_that_ends_early_is_source_closed() -> None:
    async with relay_sockets() as (feed, source, sink, drain):
        sender = asyncio.create_task(send_all(feed, b"x" * 1000))
        received = asyncio.create_task(receive(drain, 1000))
        with pytest.raises(splice.SourceClosed, match="closed with 1000 of 2000"):
            await splice.splice(source.fileno(), sink.fileno(), 2000, idle_timeout=5, on_moved=lambda n: None)
        await sender
        assert await received == b"x" * 1000


async def test_a_silent_source_is_a_stall_after_the_idle_timeout() -> None:
    async with relay_sockets() as (feed, source, sink, _drain):
        await send_all(feed, b"y" * 10, close=False)
        with pytest.raises(splice.SourceStalled):
            await splice.splice(source.fileno(), sink.fileno(), 20, idle_timeout=0.2, on_moved=lambda n: None)


async def test_what_on_moved_raises_stops_the_relay() -> None:
    class Revoked(Exception):
        pass

    def refuse(_count: int) -> None:
        raise Revoked

    async with relay_sockets() as (feed, source, sink, _drain):
        await send_all(feed, b"z" * 4096, close=False)
        with pytest.raises(Revoked):
            await splice.splice(source.fileno(), sink.fileno(), 8192, idle_timeout=5, on_moved=refuse)


async def test_a_vanished_sink_is_a_connection_error_not_a_short_source() -> None:
    async with relay_sockets() as (feed, source, sink, drain):
        drain.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        drain.close()  # a reset, as when a client gives up mid-download
        sender = asyncio.create_task(send_all(feed, secrets.token_bytes(8 * 1024 * 1024), close=False))
        with pytest.raises(ConnectionError) as caught:
            await splice.splice(
                source.fileno(), sink.fileno(), 8 * 1024 * 1024, idle_timeout=5, on_moved=lambda n: None
            )
        assert not isinstance(caught.value, splice.SourceClosed)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await sender


async def test_no_descriptor_is_left_open() -> None:
    before = len(os.listdir("/proc/self/fd"))
    async with relay_sockets() as (feed, source, sink, drain):
        after_open = len(os.listdir("/proc/self/fd"))
        sender = asyncio.create_task(send_all(feed, b"a" * 3000))
        received = asyncio.create_task(receive(drain, 3000))
        await splice.splice(source.fileno(), sink.fileno(), 3000, idle_timeout=5, on_moved=lambda n: None)
        await sender
        assert await received == b"a" * 3000
        assert len(os.listdir("/proc/self/fd")) == after_open
    assert len(os.listdir("/proc/self/fd")) == before


def test_tls_and_closing_transports_are_not_spliceable() -> None:
    class Transport:
        def __init__(self, closing: bool = False, **extra: object) -> None:
            self.closing, self.extra = closing, extra

        def is_closing(self) -> bool:
            return self.closing

        def get_extra_info(self, name: str) -> object:
            return self.extra.get(name)

    with socket.socket() as sock:
        assert splice.plain_socket_fd(Transport(socket=sock)) == sock.fileno()
        assert splice.plain_socket_fd(Transport(socket=sock, ssl_object=object())) is None
        assert splice.plain_socket_fd(Transport(socket=sock, sslcontext=object())) is None
        assert splice.plain_socket_fd(Transport(closing=True, socket=sock)) is None
        assert splice.plain_socket_fd(None) is None
