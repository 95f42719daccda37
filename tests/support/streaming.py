"""A bucket stand-in that streams large objects without holding them: GET bodies are generated on the fly.

GET /<bucket>/big/...: `big_size` bytes of a repeating pattern, written as the reader takes them (so a slow
client slows the stream, as a real bucket would). Any other GET: a small body naming the key. PUT: the
body is read and counted, and the upload is marked complete only when every declared byte arrived.
It runs on its own event loop in a thread of the test process; requests are not authenticated.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

CHUNK = 256 * 1024
_BLOCK = bytes(range(256)) * (CHUNK // 256)


@dataclass
class StreamedUpload:
    key: str
    declared: int
    received: int = 0
    complete: bool = False
    ended_at: float | None = None  # time.monotonic() when the body ended or was cut


@dataclass
class StreamingUpstream:
    big_size: int = 512 * 1024 * 1024
    port: int = 0
    uploads: dict[str, StreamedUpload] = field(default_factory=dict)
    downloads_started: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("GET", "/", self._list_buckets)  # the gateway's readiness probe
            app.router.add_route("GET", "/{bucket}", self._list_objects)  # ... with a policy's bucket
            app.router.add_route("GET", "/{bucket}/{key:.*}", self._get)
            app.router.add_route("PUT", "/{bucket}/{key:.*}", self._put)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="streaming-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the streaming upstream did not start")

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _list_buckets(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=b"<ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>",
            content_type="application/xml",
        )

    async def _list_objects(self, request: web.Request) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
            f"<Name>{request.match_info['bucket']}</Name><KeyCount>0</KeyCount>"
            "<IsTruncated>false</IsTruncated></ListBucketResult>"
        )
        return web.Response(text=body, content_type="application/xml")

    async def _get(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if not key.startswith("big/"):
            return web.Response(body=f"small object {key}".encode(), content_type="application/octet-stream")
        self.downloads_started += 1
        response = web.StreamResponse()
        response.content_length = self.big_size
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        left = self.big_size
        try:
            while left:
                piece = _BLOCK[: min(left, CHUNK)]
                await response.write(piece)  # waits while the reader is behind
                left -= len(piece)
        except ConnectionError:
            return response
        await response.write_eof()
        return response

    async def _put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        upload = StreamedUpload(key, request.content_length or 0)
        self.uploads[key] = upload
        try:
            async for data in request.content.iter_any():
                upload.received += len(data)
        except ConnectionError:
            upload.ended_at = time.monotonic()  # the sender gave up: the object must not exist
            raise
        upload.ended_at = time.monotonic()
        upload.complete = upload.received == upload.declared
        if not upload.complete:
            raise web.HTTPBadRequest(text="incomplete body")
        return web.Response(headers={"ETag": '"0123456789abcdef0123456789abcdef"'})
