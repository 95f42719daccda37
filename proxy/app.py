"""Wires the gateway together: store, live state, upstream pool, listeners, observers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import signal
import ssl
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from proxy.access.workflow import Workflow, running_workflow
from proxy.config import Settings
from proxy.control.app import control_app
from proxy.gateway import Gateway
from proxy.notify.runtime import notifying
from proxy.observe.audit import AuditLog
from proxy.observe.events import EventBus
from proxy.observe.logging import configure_logging
from proxy.observe.runtime import metrics_listener, observing
from proxy.s3 import listener
from proxy.s3.upstream import Upstream, new_pool
from proxy.state import LiveState, start_change_listener
from proxy.store.sql import SqlStore

log = structlog.get_logger("grantgate")

# The largest request head aiohttp accepts; S3 allows 8 KiB of user metadata plus the usual headers.
MAX_LINE = 16 * 1024
MAX_FIELD = 16 * 1024
# How much of an upload aiohttp buffers before it stops reading the socket: 64 KiB by default, which
# makes a 1 GiB PUT take 16 000 pause/resume round trips.
READ_BUFSIZE = 1024 * 1024
# aiohttp's AppRunner keeps a connection that never completes its request head for an hour (3630 s):
# a slowloris client could hold sockets that long. 75 s (web.run_app's default) also bounds idle
# keep-alive connections, and is longer than any client's pause between requests on a pool.
S3_IDLE_TIMEOUT_SECONDS = 75.0


def s3_app(gateway: Gateway) -> web.Application:
    # client_max_size is irrelevant: bodies are streamed, never read whole by aiohttp.
    app = web.Application(
        handler_args={"max_line_size": MAX_LINE, "max_field_size": MAX_FIELD, "read_bufsize": READ_BUFSIZE}
    )
    listener.install(app, gateway)
    return app


def s3_app_runner(gateway: Gateway) -> web.AppRunner:
    return web.AppRunner(
        s3_app(gateway), access_log=None, handle_signals=False, keepalive_timeout=S3_IDLE_TIMEOUT_SECONDS
    )


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """Open every long-lived resource in order and close them in reverse, whatever happens."""
    store = await SqlStore.open(settings.store_url(), upgrade=settings.store_url().startswith("sqlite"))
    try:
        state = LiveState(
            store,
            settings.server_key(),
            interval=settings.server.refresh_interval_seconds,
            grace=settings.server.state_grace_seconds,
        )
        await state.refresh(force=True)
        refresher = asyncio.create_task(state.run(), name="state-refresh")
        listener_task = start_change_listener(store, state)
        pool = new_pool(settings.upstream)
        try:
            bus = EventBus()
            bus.subscribe(AuditLog())
            yield Gateway(settings, state, Upstream(settings.upstream, pool), bus)
        finally:
            for task in (refresher, listener_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await pool.close()
    finally:
        await store.close()


async def serve(settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    async with (
        running_gateway(settings) as gateway,
        # Observers start before the workflow, so its first events are recorded, and stop after it.
        observing(settings, gateway.state.store, gateway.state, gateway.bus) as observability,
        metrics_listener(observability),
        notifying(
            settings,
            gateway.bus,
            observability.metrics.registry if observability.metrics else None,
            store=gateway.state.store,
        ) as notifiers,
        running_workflow(
            Workflow(gateway.state.store, settings.policy.build(), gateway.bus),
            settings.policy.sweep_interval_seconds,
        ) as workflow,
    ):
        s3_runner = s3_app_runner(gateway)
        control_runner = web.AppRunner(
            control_app(gateway.state, workflow, observability, notifiers, settings),
            access_log=None,
            handle_signals=False,
        )
        await s3_runner.setup()
        await control_runner.setup()
        try:
            server = settings.server
            await web.TCPSite(
                s3_runner, server.s3_host, server.s3_port, ssl_context=tls_context(settings), reuse_port=True
            ).start()
            await web.TCPSite(control_runner, server.control_host, server.control_port).start()
            log.info(
                "gateway_started",
                s3=f"{server.s3_host}:{server.s3_port}",
                control=f"{server.control_host}:{server.control_port}",
                upstream=settings.upstream.endpoint_url or f"aws:{settings.upstream.region}",
            )
            settle_heap()
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            await s3_runner.cleanup()
            await control_runner.cleanup()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.server.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.resolve(settings.server.tls_cert), settings.resolve(settings.server.tls_key))
    return ctx


def tune_malloc() -> None:
    """Keep large transfer buffers off fresh mmap'd pages (halves CPU per GiB streamed with glibc)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(libc_name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 16 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 64 * 1024 * 1024)


def settle_heap() -> None:
    """Move what startup built (modules, app, grant index) out of the collector's sight.

    A full collection walks every tracked object; with the startup heap in it each one stalled the loop
    80-300 ms, the gateway's worst latency spikes. Garbage goes first, or it would be kept forever.
    Called once: freezing again later would also pin the cycles of requests then in flight.
    """
    gc.collect()
    gc.freeze()


def install_event_loop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_server(settings: Settings) -> None:
    configure_logging(settings.log.level, settings.log.format)
    tune_malloc()
    install_event_loop()

    from proxy.workers import serve_s3, supervise, worker_count

    async def main(index: int = 0) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await (serve(settings, stop) if index == 0 else serve_s3(settings, stop, index))

    count = worker_count(settings)
    if count == 1:
        asyncio.run(main())
    elif code := supervise(count, lambda index: asyncio.run(main(index))):
        raise SystemExit(code)
