"""Wires the gateway together: store, live state, upstream pool, listeners, observers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import gc
import socket
import ssl
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from proxy import build
from proxy.access.policy import Policy
from proxy.audit.log import AuditLog
from proxy.config import ConfigError, Settings, reason
from proxy.control.app import control_app
from proxy.gateway import Gateway
from proxy.live_state import LiveState
from proxy.notify.notifiers import notifying
from proxy.observe.events import EventBus
from proxy.observe.observers import Observability, metrics_listener, observing
from proxy.s3.bucketprobe import BucketProbe
from proxy.s3.listener import S3Listener
from proxy.s3.prefixsize import PrefixSizer
from proxy.s3.upstream import Upstream, new_pool
from proxy.store.sql import SqlStore
from proxy.workflow.oncall import PagerDutyOnCall
from proxy.workflow.service import Workflow, running_workflow
from proxy.written import WrittenVersion

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


def s3_server_runner(listener: S3Listener) -> web.ServerRunner:
    # client_max_size is irrelevant: bodies are streamed, never read whole by aiohttp.
    server = web.Server(
        listener,
        access_log=None,
        keepalive_timeout=S3_IDLE_TIMEOUT_SECONDS,
        max_line_size=MAX_LINE,
        max_field_size=MAX_FIELD,
        read_bufsize=READ_BUFSIZE,
    )
    return web.ServerRunner(server, handle_signals=False)


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, policy: Policy, written: WrittenVersion | None = None, *, migrate: bool = True
) -> AsyncIterator[Gateway]:
    """Open every long-lived resource in order and close them in reverse, whatever happens.

    `written`: the counter shared with sibling workers (proxy/written.py); one of its own otherwise.
    `migrate`: bring an embedded SQLite store to head first (a secondary worker never does: two processes
    migrating one SQLite file at once lock each other out, so `run_server` migrates before forking).
    """
    url = settings.store_url()
    store = await SqlStore.open(url, upgrade=migrate and url.startswith("sqlite"))
    try:
        state = LiveState(
            store,
            settings.server_key(),
            interval=settings.server.refresh_interval_seconds,
            grace=settings.server.state_grace_seconds,
            written=written,
        )
        await state.refresh(force=True)
        refresher = asyncio.create_task(state.run(), name="state-refresh")
        listener_task = store.listen_for_changes(state.wake)
        pool = new_pool(settings.upstream)
        try:
            bus = EventBus()
            bus.subscribe(AuditLog())
            yield Gateway(settings, policy, state, Upstream(settings.upstream, pool), bus, store)
        finally:
            for task in (refresher, listener_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await pool.close()
    finally:
        await store.close()


def observing_gateway(
    gateway: Gateway, *, worker: int = 0, metrics_token: str = ""
) -> contextlib.AbstractAsyncContextManager[Observability]:
    """The observers of one gateway process's events (audit, metrics, anomaly rules), configured from
    its settings: see proxy/observe/observers.py."""
    return observing(
        gateway.settings.observe(),
        gateway.policy,
        gateway.store,
        gateway.state,
        gateway.bus,
        spool_dir=gateway.settings.audit_spool_dir(),
        worker=worker,
        metrics_token=metrics_token,
        upstream=gateway.upstream,
    )


async def serve(
    settings: Settings,
    policy: Policy,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    written: WrittenVersion | None = None,
) -> None:
    """Worker 0 (or the only one): the S3 and control listeners, observers, notifiers and the workflow.
    `policy`: settings.policy built once by the caller, before any worker exists."""
    async with (
        running_gateway(settings, policy, written) as gateway,
        # Observers start before the workflow, so its first events are recorded, and stop after it.
        observing_gateway(gateway, metrics_token=settings.metrics_token()) as observability,
        metrics_listener(observability),
        notifying(
            settings.webhooks,
            settings.slack,
            settings.server.public_url,
            gateway.bus,
            observability.metrics.registry if observability.metrics else None,
            store=gateway.store,
            email=settings.email,
            policy=policy,
        ) as notifiers,
        running_workflow(
            Workflow(
                gateway.store,
                policy,
                gateway.bus,
                settle=gateway.state.settle_own_write,
                oncall=PagerDutyOnCall(settings.pagerduty) if settings.pagerduty.enabled else None,
            ),
            settings.policy.sweep_interval_seconds,
        ) as workflow,
    ):
        s3_listener = S3Listener(gateway)
        s3_runner = s3_server_runner(s3_listener)
        probe = BucketProbe(gateway.upstream, probe_bucket(policy))
        control_runner = web.AppRunner(
            control_app(
                gateway.state,
                workflow,
                observability,
                notifiers,
                settings,
                probe,
                PrefixSizer(gateway.upstream),
            ),
            access_log=None,
            handle_signals=False,
        )
        await s3_runner.setup()
        await control_runner.setup()
        try:
            server = settings.server
            tls = tls_context(settings)
            s3_site = web.TCPSite(s3_runner, server.s3_host, server.s3_port, ssl_context=tls, reuse_port=True)
            await listen(s3_site, "S3")
            await listen(web.TCPSite(control_runner, server.control_host, server.control_port), "control")
            log.info(
                "gateway_started",
                s3=f"{server.s3_host}:{server.s3_port}",
                control=f"{server.control_host}:{server.control_port}",
                upstream=settings.upstream.endpoint_url or f"aws:{settings.upstream.region}",
                build=build.describe(),
            )
            await warn_if_bucket_unusable(probe, settings)
            settle_heap()
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            await s3_runner.cleanup()
            await s3_listener.close()
            await control_runner.cleanup()


def probe_bucket(policy: Policy) -> str | None:
    """The bucket readiness probes: the first the policy protects (None: list the buckets)."""
    for resource in policy.resources:
        for path in resource.paths:
            return path.bucket
    return None


async def warn_if_bucket_unusable(probe: BucketProbe, settings: Settings) -> None:
    """Start anyway (the bucket may come back, and /readyz says so meanwhile), but say it loudly."""
    health = await probe.health()
    if not health.ok:
        log.warning(
            "bucket_unusable",
            status=health.status,
            detail=health.detail,
            bucket=probe.bucket,
            upstream=settings.upstream.endpoint_url or f"aws:{settings.upstream.region}",
        )


async def listen(site: web.TCPSite, role: str) -> None:
    """Start a listener; a port that cannot be bound is the operator's to fix, said in one line."""
    try:
        await site.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {site.name} ({role} port): {_bind_problem(exc)}") from None


def _bind_problem(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use by another process"
    return exc.strerror or str(exc)


def refuse_shared_s3_port(host: str, port: int) -> None:
    """Fail unless the S3 port is free. Our listeners bind it with SO_REUSEPORT so that workers share
    it, which would also let this gateway silently share it with another process (another gateway
    with other grants), each answering some of the requests. A probe bound without SO_REUSEPORT
    fails while anything listens there; called before the workers exist, so none of them is it."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port} (S3 port): {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As the listener does: a port left in TIME_WAIT by a previous run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{port} (S3 port): {_bind_problem(exc)}") from None


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.server.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert, key = settings.resolve(settings.server.tls_cert), settings.resolve(settings.server.tls_key)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[server] tls_cert {cert} / tls_key {key}: {reason(exc)}") from None
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
