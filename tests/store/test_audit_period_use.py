"""A grant's use over a period, from the chained records, on SQLite and PostgreSQL: only the period's
records count, roll-ups are not added to the receipts they cover, and the query is read off the
(grant_id, at) index rather than every record the grant ever made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from proxy.audit.records import AuditRecord, request_record, usage_of, usage_record
from proxy.audit.resources import ResourceCatalog
from proxy.audit.store import AuditStore, period_records
from proxy.observe.events import RequestEvent, Verdict
from proxy.store.sql import SqlStore

NOW = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
CATALOG = ResourceCatalog.from_patterns({"models": ["s3://archive/models/"]})


def read(at: datetime, size: int, grant: str = "g_1") -> RequestEvent:
    return RequestEvent(
        request_id=f"R{at.timestamp()}",
        started_at=at.timestamp(),
        source_ip="10.0.0.5",
        user_agent="boto3",
        method="GET",
        principal="alice",
        operation="GetObject",
        action="read",
        bucket="archive",
        key="models/llama.gguf",
        decision=Verdict.ALLOW,
        grant_ids=(grant,),
        status=200,
        bytes_out=size,
    )


def records(*events: RequestEvent) -> list[AuditRecord]:
    return [request_record(e, CATALOG) for e in events]


async def test_only_the_periods_records_count(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append(
        records(
            read(NOW - timedelta(days=1), 1000),  # before the period
            read(NOW + timedelta(minutes=1), 10),
            read(NOW + timedelta(minutes=2), 20),
            read(NOW + timedelta(minutes=3), 40, grant="g_other"),
            read(NOW + timedelta(days=2), 80),  # after the period's end
        )
    )
    found, partial = await audit.usages_since(["g_1", "g_2"], NOW, NOW + timedelta(days=1))
    assert not partial and set(found) == {"g_1"}
    use = found["g_1"]
    assert (use.requests, use.objects_read, use.bytes_read) == (2, 2, 30)
    assert use.last_used_at == NOW + timedelta(minutes=2)
    assert (await audit.usages_since(["g_1"], NOW))[0]["g_1"].bytes_read == 110  # no end: until now

    # More records than the limit: a floor, and said so.
    floor, partial = await audit.usages_since(["g_1"], NOW, limit=1)
    assert partial and floor["g_1"].requests == 1


async def test_roll_ups_are_counted_without_the_receipts_they_cover(store: SqlStore) -> None:
    audit = AuditStore(store)
    receipt = read(NOW + timedelta(seconds=1), 500)
    receipt.complete = True  # data_plane = "usage" still chains whole-object reads as receipts
    rolled = usage_of(receipt)
    assert rolled is not None
    await audit.append([request_record(receipt, CATALOG), usage_record(rolled, NOW + timedelta(seconds=2))])
    found, _ = await audit.usages_since(["g_1"], NOW)
    assert (found["g_1"].requests, found["g_1"].bytes_read) == (1, 500)


async def test_the_period_query_reads_the_grant_and_time_index(store: SqlStore) -> None:
    # A trail of many grants over a long time, as the planner sees it after ANALYZE.
    audit = AuditStore(store)
    await audit.append(records(*(read(NOW + timedelta(minutes=i), 1, f"g_{i % 300}") for i in range(3000))))
    query = period_records(["g_1", "g_2"], NOW, NOW + timedelta(days=1), 10)
    async with store.engine.connect() as conn:
        compiled = query.compile(conn.engine, compile_kwargs={"literal_binds": True})
        postgres = conn.dialect.name == "postgresql"
        await conn.execute(text("ANALYZE audit_events" if postgres else "ANALYZE"))
        plan = await conn.execute(
            text(f"EXPLAIN {compiled}" if postgres else f"EXPLAIN QUERY PLAN {compiled}")
        )
        lines: list[Any] = [str(row[-1]) for row in plan]
    assert any("ix_audit_events_grant_id_at" in line for line in lines), lines
