"""Starts the observers of one gateway process (metrics, durable audit, anomaly rules) and stops them.

The core never knows these exist: they subscribe to the EventBus here, and their routes are mounted on
the control listener by `install_metrics` and proxy/control/audit_api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import prometheus_client
import structlog
from aiohttp import web

from proxy.access.policy import Policy
from proxy.audit.anchors import publish_anchors
from proxy.audit.resources import ResourceCatalog
from proxy.audit.spool import SpoolingAudit, start_spooling
from proxy.audit.store import AuditStore
from proxy.audit.writer import AuditWriter
from proxy.errors import S3Error
from proxy.live_state import LiveState
from proxy.observe.anomalies import SUSPEND, SUSPEND_PRINCIPAL, Detectors, Finding
from proxy.observe.events import AnomalyAlert, EventBus
from proxy.observe.feed import Forwarder, receiving, socket_path
from proxy.observe.metrics import GatewayMetrics, metrics_handler
from proxy.observe.model_listing import keep_current
from proxy.observe.model_pulls import ModelPulls
from proxy.observe.models import KnownModels
from proxy.observe.multiprocess import shared_directory
from proxy.observe.settings import AnomalySettings, MetricsSettings, ObserveSettings
from proxy.s3.upstream import Upstream
from proxy.store.model_reads import ModelReads
from proxy.store.sql import SqlStore
from proxy.store.suspensions import GrantSuspensions
from proxy.store.workflow import WorkflowStore

log = structlog.get_logger("grantgate.observe")

PENDING_REFRESH_SECONDS = 15.0


def resource_catalog(policy: Policy, metrics: MetricsSettings) -> ResourceCatalog:
    """Named resources: the access policy's, plus any named under `[metrics] resources`."""
    named: dict[str, list[str]] = {}
    for resource in policy.resources:
        named.setdefault(resource.name, []).extend(str(p) for p in resource.paths)
    for name, uris in metrics.resources.items():
        named.setdefault(name, []).extend(uris)
    return ResourceCatalog.from_patterns(named)


def allowed_networks(policy: Policy, anomalies: AnomalySettings) -> dict[str, list[str]]:
    """Per resource, the networks its grants may be used from: the policy's rules, plus `[anomalies]`."""
    networks = {name: list(cidrs) for name, cidrs in policy.allowed_networks().items()}
    for selector, cidrs in anomalies.outside_network.networks.items():
        networks.setdefault(selector, []).extend(c for c in cidrs if c not in networks[selector])
    return networks


class AnomalyWatch:
    """The observer that runs the detectors, raises their alerts on the bus and carries out responses."""

    def __init__(
        self,
        detectors: Detectors,
        bus: EventBus,
        suspensions: GrantSuspensions,
        writer: AuditWriter | None,
        metrics: GatewayMetrics | None,
        clock: Callable[[], float] = time.time,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`settle`: called after a suspension is written, so this gateway's workers act on it before
        their next request rather than at their next poll (LiveState.settle_own_write)."""
        self.detectors, self.bus, self.suspensions, self.writer = detectors, bus, suspensions, writer
        self.metrics = metrics
        self.clock = clock
        self.settle = settle
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: Any) -> None:
        alerts = self.detectors.feed(event, self.clock())
        if self.writer is not None and self.detectors.new_readers is not None:
            self.writer.remember_readers(self.detectors.new_readers.take_learned())
        for alert in alerts:
            self._raise(alert)

    def raise_(self, finding: Finding) -> AnomalyAlert:
        """Raise a finding judged outside the event stream (the whole_model rule's, from the store)."""
        alert = self.detectors.responded(finding)
        self._raise(alert)
        return alert

    def _raise(self, alert: AnomalyAlert) -> None:
        self.bus.emit(alert)
        if (alert.response == SUSPEND and alert.grant_id) or (
            alert.response == SUSPEND_PRINCIPAL and alert.principal
        ):
            task = asyncio.get_running_loop().create_task(self._suspend(alert))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _suspend(self, alert: AnomalyAlert) -> None:
        reason, now = f"anomaly {alert.kind}: {alert.message}", datetime.now(UTC)
        try:
            if alert.response == SUSPEND_PRINCIPAL:
                assert alert.principal is not None
                done = await self.suspensions.suspend_principal(alert.principal, reason=reason, now=now)
            else:
                assert alert.grant_id is not None
                done = (
                    [alert.grant_id]
                    if await self.suspensions.suspend_grant(alert.grant_id, reason=reason, now=now)
                    else []
                )
        except Exception as exc:
            log.error(
                "grant_suspension_failed", grant_id=alert.grant_id, principal=alert.principal, error=repr(exc)
            )
            return
        for grant_id in done:
            if self.metrics is not None:
                self.metrics.suspensions.inc()
            log.warning("grant_suspended", grant_id=grant_id, principal=alert.principal, anomaly=alert.kind)
        if done and self.settle is not None:
            try:
                await self.settle()
            except Exception as exc:  # the poll picks the suspension up anyway
                log.warning("suspension_settle_failed", error=repr(exc))

    async def close(self) -> None:
        for task in list(self.tasks):
            with contextlib.suppress(Exception):
                await task


@dataclass
class Observability:
    """What the observers expose to the rest of the process."""

    settings: ObserveSettings
    audit: AuditStore
    suspensions: GrantSuspensions
    metrics: GatewayMetrics | None = None
    writer: AuditWriter | None = None
    watch: AnomalyWatch | None = None
    catalog: ResourceCatalog = field(default_factory=ResourceCatalog)
    metrics_token: str = ""  # empty: /metrics is open


@contextlib.asynccontextmanager
async def observing(
    settings: ObserveSettings,
    policy: Policy,
    store: SqlStore,
    state: LiveState,
    bus: EventBus,
    *,
    spool_dir: Path,
    pending_count: Callable[[], Awaitable[int]] | None = None,
    worker: int = 0,
    metrics_token: str = "",
    upstream: Upstream | None = None,
) -> AsyncIterator[Observability]:
    """Subscribe the configured observers to `bus` and run their tasks until the block ends.

    `policy` names the resources; `spool_dir` is where audit batches wait while the store is down
    (`Settings.audit_spool_dir()`). `pending_count` feeds the pending-requests gauge; by default the
    store's access requests are counted. `metrics_token` (`Settings.metrics_token()`), when set, is the
    bearer token /metrics asks for. `upstream`: the client through which worker 0 lists the policy's
    resources to learn its models (the whole_model rule is off without it).
    Among several workers, only worker 0 runs the anomaly rules; the others feed it their events.
    """
    catalog = resource_catalog(policy, settings.metrics)
    audit = AuditStore(store)
    obs = Observability(
        settings, audit, GrantSuspensions(store), catalog=catalog, metrics_token=metrics_token
    )
    tasks: list[asyncio.Task[None]] = []
    if settings.metrics.enabled:
        prometheus_client.disable_created_metrics()  # halves the series; Prometheus has no use for them

        def live() -> dict[str, float]:
            try:
                grants = len(state.view().grants)
            except S3Error:  # the state is too old to trust: report none rather than stale figures
                grants = 0
            return {"observer_failures": bus.failures, "grants": grants, "state_version": state.version or 0}

        obs.metrics = GatewayMetrics(catalog, per_principal=settings.metrics.per_principal, live=live)
        bus.subscribe(obs.metrics)
        count = pending_count or WorkflowStore(store).count_pending
        tasks.append(asyncio.create_task(_refresh_pending(obs.metrics, count), name="pending-requests"))
    if settings.audit.enabled and settings.audit.anchor_interval_seconds and worker == 0:
        interval = settings.audit.anchor_interval_seconds
        tasks.append(asyncio.create_task(publish_anchors(audit, interval), name="audit-anchors"))
    if settings.audit.enabled:
        sink = await start_spooling(audit, spool_dir) or audit
        obs.writer = AuditWriter(sink, settings.audit, catalog, obs.metrics)
        bus.subscribe(obs.writer)
        obs.writer.start()
    shared = shared_directory()  # None in a single process
    if settings.anomalies.enabled and shared is not None and worker > 0:
        dropped = obs.metrics.feed_dropped.inc if obs.metrics is not None else None
        forwarder = Forwarder(socket_path(shared), on_drop=dropped)
        bus.subscribe(forwarder)
        tasks.append(asyncio.create_task(forwarder.run(), name="anomaly-feed"))
    elif settings.anomalies.enabled:
        known = await audit.readers() if settings.anomalies.new_group_reader.enabled else set()
        models = _watched_models(settings.anomalies, policy, upstream, tasks)
        detectors = Detectors(
            settings.anomalies,
            catalog,
            known_readers=known,
            networks=allowed_networks(policy, settings.anomalies),
            models=models,
        )
        obs.watch = AnomalyWatch(
            detectors, bus, obs.suspensions, obs.writer, obs.metrics, settle=state.settle_own_write
        )
        bus.subscribe(obs.watch)
        if detectors.whole_model is not None:
            pulls = ModelPulls(detectors.whole_model, ModelReads(store), obs.watch.raise_)
            tasks.append(asyncio.create_task(pulls.run(), name="model-pulls"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            if obs.watch is not None and shared is not None:
                await stack.enter_async_context(receiving(socket_path(shared), obs.watch))
            yield obs
    finally:
        bus.flush()  # the last requests' events, queued by emit_later, before the observers stop
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if obs.watch is not None:
            await obs.watch.close()
        if obs.writer is not None:
            await obs.writer.close()
            if isinstance(obs.writer.audit, SpoolingAudit):
                await obs.writer.audit.close()


def _watched_models(
    anomalies: AnomalySettings, policy: Policy, upstream: Upstream | None, tasks: list[asyncio.Task[None]]
) -> KnownModels | None:
    """The model catalogue, kept current by a listing task of the policy's resources (added to `tasks`)."""
    rule = anomalies.whole_model
    if not rule.enabled or upstream is None:
        return None
    known = KnownModels()
    places = [(p.bucket, p.prefix) for r in policy.resources for p in r.paths]
    if places:
        tasks.append(asyncio.create_task(keep_current(upstream, places, rule, known), name="model-listing"))
    return known


async def _refresh_pending(metrics: GatewayMetrics, count: Callable[[], Awaitable[int]]) -> None:
    while True:
        try:
            metrics.pending.set(await count())
        except Exception as exc:
            log.warning("pending_count_failed", error=repr(exc))
        await asyncio.sleep(PENDING_REFRESH_SECONDS)


def install_metrics(app: web.Application, obs: Observability) -> None:
    """Serve /metrics (`[metrics] path`) on the control listener's app."""
    if obs.metrics is not None:
        app.router.add_get(obs.settings.metrics.path, metrics_handler(obs.metrics, obs.metrics_token))


@contextlib.asynccontextmanager
async def metrics_listener(obs: Observability) -> AsyncIterator[None]:
    """The optional listener of its own for /metrics (`[metrics] port`), so scrapers need no API access."""
    metrics, settings = obs.metrics, obs.settings.metrics
    if metrics is None or not settings.port:
        yield
        return
    app = web.Application()
    app.router.add_get(settings.path, metrics_handler(metrics, obs.metrics_token))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        yield
    finally:
        await runner.cleanup()
