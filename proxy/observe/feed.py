"""One set of anomaly rules for every worker: workers other than 0 send their request events to worker 0.

A rule that counts over a window (bytes a principal read, denials in a row) must see every request of
the host, not the share the kernel happened to hand one worker, and an alert must reach worker 0, which
alone runs the notifiers. So workers 1..n forward each request event, as one JSON line, over a Unix
socket in the supervisor's private directory; worker 0 feeds what it receives to its rules as it feeds
its own events. Only the same user can reach that directory, so nobody else can inject events.

Forwarding never holds up a request: events wait in a bounded backlog while worker 0 is away (being
restarted, say), and are dropped, and counted, beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import structlog

from proxy.observe.events import RequestEvent

log = structlog.get_logger("grantgate.feed")

SOCKET_NAME = "events.sock"
# Events kept while worker 0 cannot be reached: a few seconds of a busy worker's traffic.
BACKLOG = 50_000
RECONNECT_SECONDS = 0.2
# Events of this long leave in one write. Sent one by one, each request cost its worker a system call
# and woke worker 0 on the other core: 50-100 µs more per request at one connection. Rules count over
# seconds and minutes, so they do not notice the wait.
BATCH_SECONDS = 0.05
# Far above any event's line (a key is at most 1 KiB): a longer line is not an event.
LINE_LIMIT = 256 * 1024
_TUPLE_FIELDS = ("groups", "grant_ids")


def socket_path(directory: str) -> str:
    return os.path.join(directory, SOCKET_NAME)


def encode(event: RequestEvent) -> bytes:
    return orjson.dumps(event.as_dict()) + b"\n"


def decode(line: bytes) -> RequestEvent:
    """The event a worker sent; ValueError or TypeError if the line is not one."""
    fields = orjson.loads(line)
    if not isinstance(fields, dict):
        raise ValueError("not an event")
    for name in _TUPLE_FIELDS:
        fields[name] = tuple(fields.get(name) or ())
    return RequestEvent(**fields)


class Forwarder:
    """A bus observer in workers 1..n: each request event, sent on to worker 0."""

    def __init__(
        self,
        path: str,
        *,
        backlog: int = BACKLOG,
        batch_seconds: float = BATCH_SECONDS,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.backlog = backlog
        self.batch_seconds = batch_seconds
        self.dropped = 0
        self._on_drop = on_drop
        self._pending: list[RequestEvent] = []  # encoded as they leave, in the sending task
        self._ready = asyncio.Event()

    def __call__(self, event: Any) -> None:
        if not isinstance(event, RequestEvent):
            return
        if len(self._pending) >= self.backlog:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
            return
        self._pending.append(event)
        self._ready.set()

    async def run(self) -> None:
        """Keep a connection to worker 0 and send what is pending; reconnect whenever it drops."""
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
            except OSError:
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            try:
                await self._send(reader, writer)
            except OSError as exc:  # worker 0 went away: what was pending waits for its successor
                log.warning("event_feed_lost", error=repr(exc))
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._pending:  # kept while there was no connection
            self._ready.set()
        try:
            while True:
                await self._ready.wait()
                await asyncio.sleep(self.batch_seconds)
                self._ready.clear()
                if reader.at_eof():  # worker 0 closed its end (it is stopping): not a write into the void
                    raise ConnectionResetError("worker 0 closed the event feed")
                events, self._pending = self._pending, []
                try:
                    writer.writelines([encode(event) for event in events])
                    await writer.drain()
                except OSError:
                    self._pending[:0] = events  # for the next connection (a few may then arrive twice)
                    raise
        except asyncio.CancelledError:
            # This worker is stopping: hand the transport what is pending, which it sends as it closes.
            if self._pending and not reader.at_eof() and not writer.is_closing():
                writer.writelines([encode(event) for event in self._pending])
                self._pending = []
            raise


@contextlib.asynccontextmanager
async def receiving(path: str, feed: Callable[[RequestEvent], None]) -> AsyncIterator[None]:
    """In worker 0: accept the other workers' events on `path` and hand each to `feed`."""

    clients: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.add(writer)
        try:
            while line := await reader.readline():
                try:
                    event = decode(line)
                except (ValueError, TypeError) as exc:
                    log.warning("event_feed_bad_line", error=repr(exc))
                    continue
                feed(event)
        except (OSError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("event_feed_closed", error=repr(exc))
        finally:
            clients.discard(writer)
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by the worker 0 this one replaces
    server = await asyncio.start_unix_server(serve, path, limit=LINE_LIMIT)
    try:
        yield
    finally:
        server.close()
        for client in list(clients):  # so the workers notice at once and keep what they hold
            client.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
