"""The durable audit writer and the observers' wiring, against a real SQLite store and a real listener."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs
from support.turns import counting_turns

from proxy.audit.records import SLICE, Anchor, AuditRecord
from proxy.audit.resources import ResourceCatalog
from proxy.audit.store import AuditQuery, AuditStore
from proxy.audit.writer import AuditWriter, build_batch
from proxy.config import Settings
from proxy.live_state import LiveState
from proxy.observe.events import AnomalyAlert, EventBus, RequestEvent
from proxy.observe.metrics import GatewayMetrics
from proxy.observe.observers import metrics_listener, observing, publish_anchors
from proxy.observe.settings import AuditSettings
from proxy.store.sql import SqlStore

NOW = datetime(2025, 3, 5, 10, 0, tzinfo=UTC)
CATALOG = ResourceCatalog()


def request(decision: str = "allow", grant: str = "g_1", nbytes: int = 10) -> RequestEvent:
    return RequestEvent(
        request_id="R",
        started_at=NOW.timestamp(),
        source_ip="127.0.0.1",
        user_agent="t",
        method="GET",
        principal="alice",
        operation="GetObject",
        action="read",
        bucket="b",
        key="k",
        decision=decision,
        grant_ids=(grant,) if decision == "allow" else (),
        status=200 if decision == "allow" else 403,
        bytes_out=nbytes if decision == "allow" else 0,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(f"sqlite:///{tmp_path / 'gg.db'}", upgrade=True)
    try:
        yield opened
    finally:
        await opened.close()


async def test_per_request_mode_stores_every_request() -> None:
    batch = await build_batch([request(), request(), request("deny")], AuditSettings(), CATALOG, NOW)
    assert [r.kind for r in batch.records] == ["s3_request"] * 3
    assert batch.usage["g_1"].requests == 2 and batch.usage["g_1"].bytes_read == 20


async def test_usage_mode_rolls_allowed_requests_up_per_grant_and_keeps_denials() -> None:
    settings = AuditSettings(data_plane="usage")
    items: list[Any] = [request(grant="g_1"), request(grant="g_1"), request(grant="g_2"), request("deny")]
    batch = await build_batch(items, settings, CATALOG, NOW)
    assert sorted(r.kind for r in batch.records) == ["grant_usage", "grant_usage", "s3_request"]
    [denial] = [r for r in batch.records if r.kind == "s3_request"]
    assert denial.decision == "deny"
    usage = {r.grant_id: r.event for r in batch.records if r.kind == "grant_usage"}
    assert (
        usage["g_1"]["requests"] == 2 and usage["g_1"]["bytes_read"] == 20 and usage["g_2"]["requests"] == 1
    )
    quiet = await build_batch(items, AuditSettings(data_plane="usage", record_denials=False), CATALOG, NOW)
    assert [r.kind for r in quiet.records] == ["grant_usage", "grant_usage"]


async def test_a_large_batch_is_built_while_other_tasks_keep_running() -> None:
    """Building the records of a full batch used to hold the event loop for milliseconds at a time."""
    async with counting_turns() as turns:
        batch = await build_batch([request() for _ in range(500)], AuditSettings(), CATALOG, NOW)
    assert len(batch.records) == 500
    assert turns.count >= 500 // SLICE


async def test_the_writer_batches_in_the_background_and_flushes_on_close(store: SqlStore) -> None:
    audit = AuditStore(store)
    metrics = GatewayMetrics(CATALOG)
    writer = AuditWriter(audit, AuditSettings(flush_interval_seconds=0.05), CATALOG, metrics)
    writer.start()
    for _ in range(3):
        writer(request())
    writer(AnomalyAlert("denial_burst", "warning", "m", NOW.timestamp(), "alice"))
    deadline = time.monotonic() + 5
    while len(await audit.query(AuditQuery())) < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    writer(request("deny"))
    await writer.close()
    kinds = [e.body["kind"] for e in await audit.query(AuditQuery())]
    assert kinds == ["s3_request"] * 3 + ["anomaly.denial_burst", "s3_request"]
    assert metrics.registry.get_sample_value("grantgate_audit_events_written_total") == 5
    usage = await audit.usage("g_1")
    assert usage is not None and usage.requests == 3
    assert (await audit.verify()).ok


async def test_under_load_full_batches_are_written_without_waiting_for_the_interval(store: SqlStore) -> None:
    audit = AuditStore(store)
    writer = AuditWriter(audit, AuditSettings(batch_size=10, flush_interval_seconds=30), CATALOG)
    for _ in range(50):
        writer(request())
    writer.start()
    deadline = time.monotonic() + 5
    while len(await audit.query(AuditQuery())) < 50 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(await audit.query(AuditQuery())) == 50
    await writer.close()


async def test_a_full_queue_drops_and_counts_instead_of_blocking(store: SqlStore) -> None:
    metrics = GatewayMetrics(CATALOG)
    writer = AuditWriter(AuditStore(store), AuditSettings(queue_size=100), CATALOG, metrics)
    for _ in range(105):
        writer(request())
    assert writer.dropped == 5
    assert metrics.registry.get_sample_value("grantgate_audit_events_dropped_total") == 5
    await writer.close()
    assert len(await AuditStore(store).query(AuditQuery())) == 100


async def test_a_failing_store_is_retried_without_losing_the_batch(store: SqlStore, tmp_path: Path) -> None:
    audit = AuditStore(store)
    metrics = GatewayMetrics(CATALOG)
    writer = AuditWriter(audit, AuditSettings(flush_interval_seconds=0.05), CATALOG, metrics)
    original = audit.append
    failures = 0

    async def flaky(*args: Any, **kwargs: Any) -> int:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise OSError("database is away")
        return await original(*args, **kwargs)

    audit.append = flaky  # type: ignore[method-assign]
    writer.start()
    writer(request())
    deadline = time.monotonic() + 5
    while not await audit.query(AuditQuery()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await writer.close()
    assert len(await audit.query(AuditQuery())) == 1
    assert metrics.registry.get_sample_value("grantgate_audit_write_failures_total") == 2


async def test_observers_are_wired_to_the_bus_and_metrics_served_on_their_own_port(
    store: SqlStore, unused_tcp_port: int, tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "base_dir": tmp_path,
            "metrics": {"port": unused_tcp_port},
            "audit": {"flush_interval_seconds": 0.05},
            "anomalies": {"denial_burst": {"threshold": 2}},
        }
    )
    state = LiveState(store, b"k" * 32, interval=1, grace=30)
    await state.refresh(force=True)
    bus = EventBus()
    async with (
        observing(
            settings.observe(),
            settings.policy.build(),
            store,
            state,
            bus,
            spool_dir=settings.audit_spool_dir(),
        ) as obs,
        metrics_listener(obs),
    ):
        bus.emit(request("deny"))
        bus.emit(request("deny"))
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{unused_tcp_port}/metrics") as resp,
        ):
            text = await resp.text()
    assert 'grantgate_anomaly_alerts_total{kind="denial_burst"} 1.0' in text
    assert 'grantgate_s3_denials_total{reason="unknown"} 2.0' in text
    kinds = [e.body["kind"] for e in await AuditStore(store).query(AuditQuery())]
    assert kinds == ["s3_request", "s3_request", "anomaly.denial_burst"]


async def test_an_event_that_cannot_be_written_costs_only_itself(store: SqlStore) -> None:
    # Not the store's fault, so no retry would mend it: retried as a batch, it held up the trail for good.
    audit = AuditStore(store)
    metrics = GatewayMetrics(CATALOG)
    writer = AuditWriter(audit, AuditSettings(flush_interval_seconds=0.05), CATALOG, metrics)
    original = audit.append

    async def refusing(records: Any, *args: Any, **kwargs: Any) -> int:
        if any(r.event.get("request_id") == "POISON" for r in records):
            raise ValueError("this record cannot be rendered")
        return await original(records, *args, **kwargs)

    audit.append = refusing  # type: ignore[method-assign]
    for request_id in ("R1", "POISON", "R2"):
        writer(replace(request(), request_id=request_id))
    writer.start()
    deadline = time.monotonic() + 5
    while len(await audit.query(AuditQuery())) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    writer(replace(request(), request_id="R3"))
    await writer.close()

    stored = [e.body["event"]["request_id"] for e in await audit.query(AuditQuery())]
    assert stored == ["R1", "R2", "R3"]
    assert writer.dropped == 1
    assert metrics.registry.get_sample_value("grantgate_audit_events_dropped_total") == 1
    assert (await audit.verify()).ok


async def test_the_chain_head_is_logged_as_an_anchor_each_time_it_moves(store: SqlStore) -> None:
    audit = AuditStore(store)
    with capture_logs() as logs:
        publisher = asyncio.create_task(publish_anchors(audit, 0.02))
        try:
            await asyncio.sleep(0.1)  # an empty chain has no head to publish
            for batch in range(2):
                await audit.append([AuditRecord("grant_created", "control", NOW, event={"n": batch})])
                await eventually_logged(logs, "audit_anchor", batch + 1)
            await asyncio.sleep(0.1)  # the head did not move: nothing more
        finally:
            publisher.cancel()
    anchors = [line["anchor"] for line in logs if line["event"] == "audit_anchor"]
    assert len(anchors) == 2
    seq, digest = await audit.head()
    assert anchors[-1] == f"{seq}:{digest}"
    assert (await audit.verify([Anchor.parse(a) for a in anchors])).ok


async def eventually_logged(logs: list[dict[str, Any]], event: str, count: int) -> None:
    async with asyncio.timeout(5):
        while sum(line["event"] == event for line in logs) < count:
            await asyncio.sleep(0.01)
