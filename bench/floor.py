"""What leaving aiohttp's web layer could save per small request: the HTTP server floor, measured.

    python -m bench.floor [--rounds 5] [--seconds 3] [--connections 32]

Four servers on uvloop answer every request with the same 4 KiB body and nothing else: aiohttp's
`web.Application` with a catch-all route (how the S3 listener is built), aiohttp's low-level `web.Server`
(no router) with a streamed and with a whole `web.Response`, and a bare `asyncio.Protocol` over httptools'
parser (the floor of a hand-written listener: keep-alive only; no pipelining care, limits, Expect, HEAD,
chunked bodies or TLS, all of which a real one would add back). wrk loads each in turn, the servers
alternating within each round; CPU is the server process's user + system time over the run (/proc),
divided by the requests wrk completed. Issue 17 set the bar for leaving aiohttp at 100 us per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import cast

import uvloop
from aiohttp import web

from bench.small import cpu_seconds
from bench.stream import free_port
from bench.suite import ensure_nginx_and_wrk, run_wrk

BODY = os.urandom(4096)
_HEADERS = {"Content-Type": "application/octet-stream", "ETag": '"floor"'}


async def _streamed(request: web.BaseRequest) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=_HEADERS)
    response.content_length = len(BODY)
    await response.prepare(request)
    await response.write(BODY)
    return response


async def _whole(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(body=BODY, headers=_HEADERS)


def _serve_router(port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _streamed)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop())


def _serve_low_level(
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
) -> Callable[[int], None]:
    def serve(port: int) -> None:
        async def main() -> None:
            server = web.Server(handler, access_log=None)
            listening = await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
            await listening.serve_forever()

        uvloop.run(main())

    return serve


def _serve_httptools(port: int) -> None:
    import httptools

    head = b"HTTP/1.1 200 OK\r\n" + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in {**_HEADERS, "Content-Length": str(len(BODY))}.items()
    )
    answer = head + b"\r\n" + BODY

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            self.parser = httptools.HttpRequestParser(self)
            self.headers: list[tuple[bytes, bytes]] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_message_complete(self) -> None:
            self.transport.write(answer)
            self.headers = []

    async def main() -> None:
        listening = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        await listening.serve_forever()

    uvloop.run(main())


SERVERS: dict[str, Callable[[int], None]] = {
    "aiohttp Application + router": _serve_router,
    "aiohttp low-level Server": _serve_low_level(_streamed),
    "  ... answering web.Response": _serve_low_level(_whole),
    "httptools Protocol (floor)": _serve_httptools,
}


def _wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # NAME:PORT, the child process's job
    args = parser.parse_args(argv)
    if args.serve:
        name, _, port = args.serve.rpartition(":")
        SERVERS[name](int(port))
        return
    _nginx, wrk = ensure_nginx_and_wrk()
    cpu: dict[str, list[float]] = {name: [] for name in SERVERS}
    for round_no in range(args.rounds):
        names = list(SERVERS) if round_no % 2 == 0 else list(reversed(SERVERS))
        for name in names:
            port = free_port()
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.floor", "--serve", f"{name}:{port}"], stderr=subprocess.DEVNULL
            )
            try:
                _wait_listening(port)
                before = cpu_seconds(child.pid)
                result = run_wrk(
                    wrk, f"http://127.0.0.1:{port}/b/k", args.connections, args.seconds, via_gateway=False
                )
                cpu[name].append((cpu_seconds(child.pid) - before) * 1e6 / max(result.requests, 1))
            finally:
                child.terminate()
                child.wait()
        print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    print(
        f"CPU us per 4 KiB request at {args.connections} connections, median (min-max), {args.rounds} rounds"
    )
    print(f"load {os.getloadavg()[0]:.1f}")
    floor = statistics.median(cpu["httptools Protocol (floor)"])
    for name, values in cpu.items():
        median = statistics.median(values)
        spread = f"({min(values):.1f}-{max(values):.1f})"
        print(f"{name:<30} {median:6.1f} {spread}  {median - floor:+6.1f} over the floor")


if __name__ == "__main__":
    main()
