"""Zero-copy relay of a body between two plaintext TCP sockets, with Linux splice(2).

Relaying through Python costs a fresh `bytes` per socket read, a copy into user space and one back
out, per byte; nginx pays the two copies as well. splice moves the socket's pages into a kernel pipe
and from it into the other socket without them entering the process, which is what lets this gateway
stream a download faster than a C proxy that copies. Only plaintext sockets qualify: TLS has to
encrypt in user space, so a TLS leg stays on the ordinary loop (the listener decides).

The sockets belong to event-loop transports; the relay works on duplicates of their descriptors, so
the transports stay registered, untouched, and close them as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Callable

AVAILABLE = sys.platform == "linux" and hasattr(os, "splice")
# The kernel's default pipe holds 64 KiB: 16 times as many system calls per GiB as this.
PIPE_SIZE = 1024 * 1024
# linux/fcntl.h; Python's fcntl module names them only on some builds
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_MORE = getattr(os, "SPLICE_F_MORE", 4)


class SourceClosed(ConnectionError):
    """The source socket reached its end before the promised length."""


class SourceStalled(TimeoutError):
    """The source sent nothing for the idle timeout."""


def plain_socket_fd(transport: asyncio.BaseTransport | None) -> int | None:
    """The descriptor of a transport's TCP socket, or None when it cannot be spliced (TLS, closing)."""
    if not AVAILABLE or transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object"):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    fd = sock.fileno()
    return fd if fd >= 0 else None


async def splice(
    source: int,
    sink: int,
    length: int,
    *,
    idle_timeout: float | None,
    on_moved: Callable[[int], None],
) -> None:
    """Move exactly `length` bytes from socket `source` to socket `sink`.

    `on_moved(n)` runs for every piece taken from the source; whatever it raises stops the relay.
    Raises SourceClosed (closed or reset) or SourceStalled (silent) if the source falls short, and
    ConnectionError if the sink goes.
    """
    loop = asyncio.get_running_loop()
    src, dst = os.dup(source), os.dup(sink)
    pipe_out, pipe_in = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # capped by /proc/sys/fs/pipe-max-size; smaller still works
            fcntl.fcntl(pipe_in, _F_SETPIPE_SZ, PIPE_SIZE)
        # What the pipe holds in fact: the kernel may grant less than asked.
        capacity = fcntl.fcntl(pipe_in, _F_GETPIPE_SZ)
        remaining, in_pipe = length, 0
        while remaining or in_pipe:
            progressed = False
            if remaining and in_pipe < capacity:
                try:
                    taken = _splice(src, pipe_in, min(remaining, capacity - in_pipe), 0)
                except OSError as exc:  # reset: told apart from the sink's failures by its type
                    raise SourceClosed(f"source failed with {remaining} of {length} bytes unsent") from exc
                if taken == 0:
                    raise SourceClosed(f"source closed with {remaining} of {length} bytes unsent")
                if taken:
                    remaining -= taken
                    in_pipe += taken
                    progressed = True
                    on_moved(taken)
            if in_pipe:
                sent = _splice(pipe_out, dst, in_pipe, _MORE if remaining else 0)
                if sent:
                    in_pipe -= sent
                    progressed = True
            if not progressed:
                # One side at a time: while the pipe holds data only the sink matters (the source's
                # socket buffers what arrives meanwhile). Waiting on the source too would wake for
                # every segment it sends, or spin when the pipe's slots are full before its bytes are.
                await (_writable(loop, dst) if in_pipe else _readable(loop, src, idle_timeout))
    finally:
        for fd in (src, dst, pipe_out, pipe_in):
            os.close(fd)


def _splice(fd_in: int, fd_out: int, count: int, more: int) -> int | None:
    """Bytes moved, 0 at the source's end, None when either side would block."""
    try:
        return os.splice(fd_in, fd_out, count, flags=_FLAGS | more)
    except BlockingIOError:
        return None


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until the sink can take more. Unbounded: a slow client is back-pressure, as on the ordinary path."""
    ready = loop.create_future()
    loop.add_writer(fd, _settle, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, idle_timeout: float | None) -> None:
    """Until the source has more; a source silent for `idle_timeout` is a stall."""
    ready = loop.create_future()
    loop.add_reader(fd, _settle, ready)
    try:
        async with asyncio.timeout(idle_timeout):  # not wait_for: it may eat a cancellation
            await ready
    except TimeoutError:
        raise SourceStalled(f"source sent nothing for {idle_timeout:g} s") from None
    finally:
        loop.remove_reader(fd)


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
