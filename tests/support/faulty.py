"""A misbehaving S3 stand-in for fault-injection tests: the object key picks how it breaks.

It speaks just enough HTTP/1.1 by hand (asyncio streams, no framework) to break it in exact places:
reset mid-body, close early, short bodies, stalls, 5xx and garbage. It runs on its own event loop in a
thread of the test process and counts the connections it holds, so tests can see them released.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

# GET /<bucket>/<mode>/<size>[/...]: how the answer to a GET breaks.
GET_MODES = (
    "ok",  # the whole body, Content-Length exact
    "reset",  # a quarter of the body, then a TCP reset
    "short",  # half of the body, then a clean close: fewer bytes than Content-Length
    "close",  # the request is read, the connection closed without an answer
    "stall-head",  # the request is read, nothing is ever sent back
    "stall-body",  # headers and a quarter of the body, then nothing
    "error500",  # an S3 InternalError
    "error503",  # an S3 SlowDown
    "garbage",  # bytes that are not HTTP
)
# PUT /<bucket>/<mode>/...: how the upload is received.
PUT_MODES = ("ok", "reset")


def pattern(size: int) -> bytes:
    """The deterministic content of an `ok` object of `size` bytes (so clients can check every byte)."""
    block = bytes(range(256)) * 256
    return (block * (size // len(block) + 1))[:size]


@dataclass
class Upload:
    key: str
    declared: int
    received: int = 0
    complete: bool = False
    abandoned: bool = False  # the sender closed the connection before the last byte


@dataclass
class FaultyUpstream:
    host: str = "127.0.0.1"
    port: int = 0
    open_connections: int = 0
    total_connections: int = 0
    uploads: list[Upload] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            # Stalled handlers are still waiting: end them so the loop closes without stray tasks.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="faulty-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def upload(self, key: str) -> Upload | None:
        with self._lock:
            return next((u for u in reversed(self.uploads) if u.key == key), None)

    # ---------------------------------------------------------------- the server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.open_connections += 1
            self.total_connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            with self._lock:
                self.open_connections -= 1

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is finished."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        parts = target.split("?")[0].split("/")  # '', bucket, mode, size, ...
        mode = parts[2] if len(parts) > 2 else "ok"
        size = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 1024
        if method == "PUT":
            return await self._put(reader, writer, "/".join(parts[2:]), mode, headers)
        return await self._get(writer, method, mode, size)

    async def _get(self, writer: asyncio.StreamWriter, method: str, mode: str, size: int) -> bool:
        body = pattern(size)
        if mode in ("error500", "error503"):
            status = 500 if mode == "error500" else 503
            code = "InternalError" if status == 500 else "SlowDown"
            xml = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            writer.write(_head(status, len(xml), "application/xml") + xml)
            await writer.drain()
            return True
        if mode == "close":
            return False
        if mode == "garbage":
            writer.write(b"\x00\xff\xfeTHIS IS NOT HTTP\r\n\r\n" * 4)
            await writer.drain()
            return False
        if mode == "stall-head":
            await asyncio.sleep(3600)
            return False
        writer.write(_head(200, size, "application/octet-stream"))
        if method == "HEAD":
            await writer.drain()
            return True
        if mode == "ok":
            writer.write(body)
            await writer.drain()
            return True
        writer.write(body[: size // 2 if mode == "short" else size // 4])
        await writer.drain()
        if mode == "reset":
            _reset(writer)
        elif mode == "stall-body":
            await asyncio.sleep(3600)
        return False

    async def _put(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        key: str,
        mode: str,
        headers: dict[str, str],
    ) -> bool:
        declared = int(headers.get("content-length", "0"))
        upload = Upload(key, declared)
        with self._lock:
            self.uploads.append(upload)
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        remaining = declared
        while remaining:
            data = await reader.read(min(remaining, 256 * 1024))
            if not data:
                upload.abandoned = True  # the gateway gave up on the upload: it must not complete
                return False
            upload.received += len(data)
            remaining -= len(data)
            if mode == "reset" and upload.received >= 64 * 1024:
                _reset(writer)
                return False
        upload.complete = True
        writer.write(_head(200, 0, None, etag='"0123456789abcdef0123456789abcdef"'))
        await writer.drain()
        return True


def _head(status: int, length: int, content_type: str | None, etag: str | None = None) -> bytes:
    reason = {200: "OK", 500: "Internal Server Error", 503: "Slow Down"}[status]
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {length}", "x-amz-request-id: FAULTY"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if etag:
        lines.append(f"ETag: {etag}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: SO_LINGER with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.contextmanager
def faulty_upstream() -> Iterator[FaultyUpstream]:
    server = FaultyUpstream()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def refused_port() -> int:
    """A loopback port nothing listens on (bound then closed: connecting to it is refused)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
