"""The sidecar's loopback listener: every request from the job is re-signed and streamed to the gateway.

The job's signature is not checked: what the job may do is decided by the gateway, under the pod's own
identity. Requests a browser or a rebound DNS name could send are refused first (guard.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp import web
from yarl import URL

from proxy.errors import S3Error
from proxy.observe.logging import configure_logging
from proxy.s3 import sigv4
from proxy.s3.forwarding import downstream_headers
from proxy.s3.request import RequestHead
from proxy.s3.upstream import Credentials
from proxy.sidecar import guard, outbound
from proxy.sidecar.credentials import StsRefused, WebIdentityCredentials
from proxy.sidecar.resign import ChunkFramingError, ChunkResigner, ResignKey

log = structlog.get_logger("grantgate.sidecar")

DEFAULT_ROLE_ARN = "arn:aws:iam::000000000000:role/grantgate-workload"
HEALTH_PREFIX = "/_grantgate/"  # no S3 bucket name can start with "_"
STREAM_READ = 1024 * 1024
# Gateway answers that mean "these credentials are no good any more": exchange the token again.
_STALE_CREDENTIAL_CODES = (
    b"<Code>InvalidToken</Code>",
    b"<Code>ExpiredToken</Code>",
    b"<Code>InvalidAccessKeyId</Code>",
)
_MAX_ERROR_BODY = 64 * 1024
_SESSION_NAME_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)


@dataclass(frozen=True, slots=True)
class SidecarOptions:
    gateway_url: str
    token_file: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 9000
    region: str = "us-east-1"
    role_arn: str = DEFAULT_ROLE_ARN
    session_name: str = ""
    duration_seconds: int | None = None
    ca_file: Path | None = None


def parse_listen(text: str) -> tuple[str, int]:
    """ "127.0.0.1:9000" -> ("127.0.0.1", 9000); anything but a loopback address is refused."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9000")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--listen {text!r}: the sidecar listens on a loopback address only")
    return host, int(port)


def default_session_name() -> str:
    name = os.environ.get("POD_NAME") or socket.gethostname() or "grantgate-sidecar"
    cleaned = _SESSION_NAME_CHARS.sub("-", name)[:64]
    return cleaned if len(cleaned) >= 2 else "grantgate-sidecar"


class Sidecar:
    """The long-lived parts: the HTTP client to the gateway and the credentials."""

    def __init__(self, options: SidecarOptions, http: aiohttp.ClientSession) -> None:
        self.options = options
        self.http = http
        parts = urlsplit(options.gateway_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--gateway {options.gateway_url!r}: expected http(s)://host[:port]")
        self.scheme = parts.scheme
        self.host = parts.netloc
        self.own_hosts = guard.own_hosts(options.listen_host, options.listen_port)
        self.credentials = WebIdentityCredentials(
            sts_url=f"{parts.scheme}://{parts.netloc}/",
            token_file=options.token_file,
            role_arn=options.role_arn,
            session_name=options.session_name or default_session_name(),
            duration_seconds=options.duration_seconds,
            http=http,
        )


SIDECAR = web.AppKey("sidecar", Sidecar)


# ---------------------------------------------------------------- the handler


async def handle(request: web.Request) -> web.StreamResponse:
    sidecar = request.app[SIDECAR]
    if request.path.startswith(HEALTH_PREFIX):
        return health(sidecar, request.path)
    refused = guard.refusal(request.headers, sidecar.own_hosts)
    if refused is not None:
        log.warning("sidecar_request_refused", reason=refused, host=request.headers.get("Host", "")[:200])
        return s3_error(request, S3Error.access_denied(refused))
    head = RequestHead.build(request.method, request.raw_path, request.headers)
    bodiless = not request.body_exists
    try:
        for attempt in (1, 2):
            creds = await sidecar.credentials.current()
            upstream = await send(sidecar, request, head, creds)
            stale, error_body = await stale_credentials(request, upstream)
            if stale:
                sidecar.credentials.invalidate(creds.access_key_id)
                if bodiless and attempt == 1:
                    upstream.release()
                    continue  # nothing was streamed: the same request again, with fresh credentials
            try:
                return await relay(request, upstream, error_body)
            finally:
                upstream.release()
    except StsRefused as exc:
        log.warning("sts_exchange_refused", code=exc.code, message=exc.message[:300])
        return s3_error(request, S3Error("AccessDenied", f"GrantGate sidecar: STS refused: {exc}", 403))
    except ChunkFramingError as exc:
        return s3_error(request, S3Error.invalid_request(f"Malformed aws-chunked body: {exc}"))
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("gateway_unreachable", error=repr(exc)[:300])
        return s3_error(request, S3Error.service_unavailable("The GrantGate gateway could not be reached."))
    raise AssertionError("unreachable")  # pragma: no cover


async def send(
    sidecar: Sidecar, request: web.Request, head: RequestHead, creds: Credentials
) -> aiohttp.ClientResponse:
    out = outbound.build(head, creds, host=sidecar.host, region=sidecar.options.region, now=datetime.now(UTC))
    headers = dict(out.headers)
    body: AsyncIterator[bytes] | None = None
    if request.body_exists:
        length = request.headers.get("Content-Length")
        if length is not None:
            headers["Content-Length"] = length
        body = _resigned(request, out.resign) if out.resign else _streamed(request)
    query = sigv4.canonical_query(out.query)
    # encoded=True: path and query go out exactly as signed.
    url = URL(f"{sidecar.scheme}://{sidecar.host}{head.raw_path}{'?' + query if query else ''}", encoded=True)
    return await sidecar.http.request(
        head.method,
        url,
        headers=headers,
        data=body,
        allow_redirects=False,
        auto_decompress=False,
        expect100=body is not None,
        skip_auto_headers=("Accept-Encoding", "Content-Type", "User-Agent"),
    )


async def _streamed(request: web.Request) -> AsyncIterator[bytes]:
    async for data in request.content.iter_any():
        yield data


async def _resigned(request: web.Request, key: ResignKey) -> AsyncIterator[bytes]:
    resigner = ChunkResigner(key, trailer=_has_trailer(request))
    async for data in request.content.iter_any():
        for piece in resigner.feed(data):
            yield piece
    resigner.finish()


def _has_trailer(request: web.Request) -> bool:
    return request.headers.get("x-amz-content-sha256", "").strip() == sigv4.STREAMING_SIGNED_TRAILER


async def stale_credentials(
    request: web.Request, upstream: aiohttp.ClientResponse
) -> tuple[bool, bytes | None]:
    """Whether the gateway refused our credentials themselves; the error body read to tell, if any."""
    if upstream.status not in (400, 403):
        return False, None
    if request.method == "HEAD":
        # No body to read the code from; a 400 on HEAD is almost always a token the gateway refused.
        return upstream.status == 400, None
    length = upstream.content_length
    if length is None or length > _MAX_ERROR_BODY:
        return False, None
    body = await upstream.content.read()
    return any(code in body for code in _STALE_CREDENTIAL_CODES), body


async def relay(
    request: web.Request, upstream: aiohttp.ClientResponse, read_body: bytes | None
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for name, value in guard.without_cors(downstream_headers(upstream.headers)):
        response.headers.add(name, value)
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    if request.body_exists and not request.content.is_eof():
        # The gateway answered before taking the whole upload (a refusal after Expect): do not let
        # the unread rest of the body be parsed as the next request.
        response.force_close()
    await response.prepare(request)
    if request.method == "HEAD" or upstream.status in (204, 304):
        await response.write_eof()
        return response
    if read_body is not None:
        await response.write(read_body)
    else:
        async for data in upstream.content.iter_any():
            await response.write(data)
    await response.write_eof()
    return response


def health(sidecar: Sidecar, path: str) -> web.Response:
    if path == HEALTH_PREFIX + "healthz":
        return web.json_response({"status": "ok"})
    if path == HEALTH_PREFIX + "readyz":
        ready = sidecar.credentials.valid
        return web.json_response(
            {"status": "ready" if ready else "no credentials"}, status=200 if ready else 503
        )
    return web.json_response({"status": "not found"}, status=404)


def s3_error(request: web.Request, err: S3Error) -> web.Response:
    request_id = f"sidecar-{time.time_ns():x}"
    body = b"" if request.method == "HEAD" else err.to_xml(request_id)
    return web.Response(
        status=err.status,
        body=body,
        headers={"x-amz-request-id": request_id, **err.headers},
        content_type="application/xml",
    )


# ---------------------------------------------------------------- running


def new_http(options: SidecarOptions) -> aiohttp.ClientSession:
    ssl_context: ssl.SSLContext | bool = True
    if options.ca_file is not None:
        ssl_context = ssl.create_default_context(cafile=str(options.ca_file))
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, ssl=ssl_context, enable_cleanup_closed=True),
        # No total timeout: a checkpoint upload may take an hour; a stalled socket still ends it.
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=300),
        auto_decompress=False,
        read_bufsize=STREAM_READ,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
    )


def sidecar_app(sidecar: Sidecar) -> web.Application:
    app = web.Application(handler_args={"max_line_size": 16 * 1024, "max_field_size": 16 * 1024})
    app[SIDECAR] = sidecar
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(options: SidecarOptions, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    async with new_http(options) as http:
        sidecar = Sidecar(options, http)
        try:
            await sidecar.credentials.current()  # fail fast in the log; requests retry on their own
        except (StsRefused, OSError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("sts_initial_exchange_failed", error=str(exc)[:300])
        runner = web.AppRunner(sidecar_app(sidecar), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, options.listen_host, options.listen_port).start()
            log.info(
                "sidecar_started",
                listen=f"{options.listen_host}:{options.listen_port}",
                gateway=options.gateway_url,
            )
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            await runner.cleanup()


def run_sidecar(options: SidecarOptions, *, log_level: str = "info") -> None:
    configure_logging(log_level, "json")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(options, stop)

    asyncio.run(main())
