"""The audit store on SQLite and PostgreSQL: one chain for many writers; queries, verify, usage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Table, insert, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection
from support.turns import turns_at_each_call

from proxy.access.grants import Action
from proxy.audit import records
from proxy.audit.records import SLICE, Anchor, AuditRecord, Usage, chain
from proxy.audit.store import INSERT_SLICE, AuditQuery, AuditStore
from proxy.store.schema import audit_events
from proxy.store.sql import SqlStore
from proxy.store.suspensions import GrantSuspensions

NOW = datetime(2025, 3, 5, 10, 0, tzinfo=UTC)


def rec(i: int, **fields: object) -> AuditRecord:
    base: dict[str, object] = {
        "kind": "s3_request",
        "plane": "data",
        "at": NOW + timedelta(minutes=i),
        "principal": "alice",
        "resource": "models",
        "target": f"s3://archive/models/{i}.bin",
        "grant_id": "g_1",
        "decision": "allow",
        "event": {"i": i},
    }
    return AuditRecord(**{**base, **fields})  # type: ignore[arg-type]


async def sql(store: SqlStore, statement: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text(statement))


async def test_appends_are_numbered_in_order_and_verify(store: SqlStore) -> None:
    audit = AuditStore(store)
    assert await audit.append([rec(0), rec(1)]) == 2
    assert await audit.append([rec(2)]) == 3
    events = await audit.query(AuditQuery())
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.body["event"]["i"] for e in events] == [0, 1, 2]
    report = await audit.verify()
    assert report.ok and report.checked == 3 and report.head_seq == 3


async def test_several_writers_extend_one_valid_chain(store: SqlStore, store_url: str) -> None:
    replicas = [await SqlStore.open(store_url) for _ in range(3)]
    try:

        async def write(n: int, audit: AuditStore) -> None:
            for i in range(8):
                await audit.append([rec(i, principal=f"replica{n}"), rec(i, principal=f"replica{n}")])

        await asyncio.gather(*(write(n, AuditStore(r)) for n, r in enumerate(replicas)))
    finally:
        for replica in replicas:
            await replica.close()
    audit = AuditStore(store)
    report = await audit.verify()
    assert report.ok, report.broken
    assert report.checked == report.head_seq == 48
    assert [e.seq for e in await audit.query(AuditQuery())] == list(range(1, 49))


async def test_queries_filter_by_principal_resource_grant_decision_kind_and_time(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append(
        [
            rec(0),
            rec(1, principal="bob", grant_id="g_2"),
            rec(2, decision="deny", grant_id=None, resource=None, target="s3://archive/other/x"),
            rec(3, kind="anomaly.exfiltration", plane="alert", target=None),
            rec(4, kind="grant_revoked", plane="control", target="s3://archive/models/"),
        ]
    )

    async def seqs(**query: object) -> list[int]:
        return [e.seq for e in await audit.query(AuditQuery(**query))]  # type: ignore[arg-type]

    assert await seqs(principal="bob") == [2]
    assert await seqs(grant_id="g_2") == [2]
    assert await seqs(decision="deny") == [3]
    assert await seqs(resource="models") == [1, 2, 4, 5]
    assert await seqs(resource="s3://archive/other/") == [3]
    assert await seqs(resource="s3://archive/models/") == [1, 2, 5]
    assert await seqs(kind="anomaly.") == [4]
    assert await seqs(since=NOW + timedelta(minutes=1), until=NOW + timedelta(minutes=3)) == [2, 3]
    assert await seqs(limit=2) == [1, 2]
    assert [e.seq for e in await audit.query(AuditQuery(limit=2, latest=True))] == [4, 5]


async def test_paged_streaming_returns_every_match(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append([rec(i, principal="bob" if i % 2 else "alice") for i in range(2500)])
    bobs = [e.seq async for e in audit.stream(AuditQuery(principal="bob"))]
    assert len(bobs) == 1250 and bobs[0] == 2 and bobs[-1] == 2500


async def test_verify_pinpoints_an_edited_event(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append([rec(i) for i in range(5)])
    await sql(store, """UPDATE audit_events SET body = replace(body, '"i"\\:3', '"i"\\:30') WHERE seq = 4""")
    report = await audit.verify()
    assert not report.ok and report.broken is not None
    assert report.broken.seq == 4 and "altered" in report.broken.problem
    assert report.checked == 3


async def test_verify_catches_an_edited_query_column(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append([rec(i) for i in range(3)])
    await sql(store, "UPDATE audit_events SET decision = 'deny' WHERE seq = 2")
    report = await audit.verify()
    assert report.broken is not None and report.broken.seq == 2 and "decision" in report.broken.problem


async def test_verify_pinpoints_a_deleted_event(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append([rec(i) for i in range(5)])
    await sql(store, "DELETE FROM audit_events WHERE seq = 2")
    report = await audit.verify()
    assert report.broken is not None and report.broken.seq == 3
    assert "event 2 is missing" in report.broken.problem


async def test_verify_catches_the_latest_events_deleted(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append([rec(i) for i in range(5)])
    await sql(store, "DELETE FROM audit_events WHERE seq >= 4")
    report = await audit.verify()
    assert report.broken is not None and "4..5 is missing" in report.broken.problem


async def cut_back(store: SqlStore, to_seq: int) -> None:
    """What someone with write access to the store can do unseen by the chain alone: drop the latest
    events and move the head back to the last one kept."""
    async with store.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_events WHERE seq > :seq"), {"seq": to_seq})
        await conn.execute(
            text(
                "UPDATE audit_chain SET seq = :seq, hash = (SELECT hash FROM audit_events WHERE seq = :seq)"
            ),
            {"seq": to_seq},
        )


async def test_a_chain_cut_back_verifies_alone_but_not_against_a_later_anchor(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append([rec(i) for i in range(5)])
    anchor = Anchor(*await audit.head())
    await cut_back(store, 3)
    assert (await audit.verify()).ok  # why anchors exist
    report = await audit.verify([anchor])
    assert report.broken is not None and report.broken.seq == 5
    assert "anchored but the chain ends at 3" in report.broken.problem


async def test_a_chain_rebuilt_after_an_edit_verifies_alone_but_not_against_an_anchor(
    store: SqlStore,
) -> None:
    audit = AuditStore(store)
    await audit.append([rec(i) for i in range(5)])
    anchor = Anchor(*await audit.head())
    # Rewrite event 3 and rebuild the chain from there, as the store's owner could: every link holds.
    await cut_back(store, 2)
    await audit.append([rec(2, principal="nobody"), rec(3), rec(4)])
    assert (await audit.verify()).ok
    report = await audit.verify([anchor])
    assert report.broken is not None and report.broken.seq == 5
    assert "not the one anchored" in report.broken.problem
    assert (await audit.verify([Anchor(*await audit.head())])).ok


async def test_an_empty_trail_verifies(store: SqlStore) -> None:
    report = await AuditStore(store).verify()
    assert report.ok and report.checked == 0 and report.head_seq == 0


async def test_usage_accumulates_per_grant(store: SqlStore) -> None:
    audit = AuditStore(store)
    first = Usage("g_1", "alice", 2, 1, 100, 0, 0, NOW, NOW + timedelta(minutes=1))
    second = Usage("g_1", "alice", 1, 0, 0, 1, 50, NOW - timedelta(minutes=5), NOW + timedelta(minutes=3))
    await audit.append([], [first])
    await audit.append([rec(0)], [second])
    usage = await audit.usage("g_1")
    assert usage is not None
    assert (
        usage.requests,
        usage.objects_read,
        usage.bytes_read,
        usage.objects_written,
        usage.bytes_written,
    ) == (
        3,
        1,
        100,
        1,
        50,
    )
    assert usage.first_used_at == NOW - timedelta(minutes=5)
    assert usage.last_used_at == NOW + timedelta(minutes=3)
    assert await audit.usage("g_unknown") is None


async def test_usages_of_several_grants_come_in_one_call(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append([], [Usage("g_1", "alice", 1, 1, 10), Usage("g_2", "bob", 2, 0, 0, 1, 20)])
    found = await audit.usages(["g_1", "g_2", "g_unused"])
    assert {gid: (u.requests, u.bytes_read, u.bytes_written) for gid, u in found.items()} == {
        "g_1": (1, 10, 0),
        "g_2": (2, 0, 20),
    }


async def test_the_newest_page_comes_first_and_pages_back_by_sequence(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.append(
        [
            rec(0, event={"action": "read"}),
            rec(1, event={"action": "write"}, resource="training-data"),
            rec(2, event={"action": "read"}),
            rec(3, kind="grant_created", plane="control", event={"action": "read"}),  # not an S3 request
            rec(4, event={"action": "read"}),
            rec(5, event={"action": "readwrite"}),  # the action is matched whole, not as a prefix
        ]
    )
    first = await audit.newest(AuditQuery(action="read"), 2)
    assert [e.seq for e in first] == [5, 3]
    older = await audit.newest(AuditQuery(action="read", before_seq=first[-1].seq), 2)
    assert [e.seq for e in older] == [1]
    assert [e.seq for e in await audit.newest(AuditQuery(resources=("training-data",)), 10)] == [2]
    assert [e.seq for e in await audit.newest(AuditQuery(resources=()), 10)] == []
    assert [e.seq for e in await audit.newest(AuditQuery(action="write"), 10)] == [2]


async def test_readers_are_remembered_once(store: SqlStore) -> None:
    audit = AuditStore(store)
    await audit.remember_readers([("models", "ml", "ann", NOW), ("models", "ml", "bob", NOW)])
    await audit.remember_readers([("models", "sec", "carol", NOW)])
    assert await audit.readers() == {("models", "ml"), ("models", "sec")}


async def test_a_suspended_grant_leaves_the_gateways_snapshot_until_reconfirmed(store: SqlStore) -> None:
    audit = AuditStore(store)
    grant = await store.add_grant(
        "alice", "archive", "models/", frozenset({Action.READ}), now=NOW, expires_at=NOW + timedelta(days=1)
    )
    suspensions = GrantSuspensions(store)
    version = await store.version()
    assert await suspensions.suspend_grant(grant.id, reason="exfiltration", now=NOW + timedelta(minutes=1))
    assert not await suspensions.suspend_grant(grant.id, reason="again", now=NOW + timedelta(minutes=2))
    assert await store.version() > version
    snapshot = await store.snapshot(NOW + timedelta(minutes=2))
    assert grant.id not in {g.id for g in snapshot.grants}
    assert [s.grant_id for s in await suspensions.list()] == [grant.id]

    assert await suspensions.lift_suspension(grant.id, actor="carol", now=NOW + timedelta(minutes=3))
    assert not await suspensions.lift_suspension(grant.id, actor="carol", now=NOW + timedelta(minutes=4))
    snapshot = await store.snapshot(NOW + timedelta(minutes=5))
    assert grant.id in {g.id for g in snapshot.grants}
    kinds = [e.body["kind"] for e in await audit.query(AuditQuery(grant_id=grant.id))]
    assert kinds == ["grant_suspended", "grant_reconfirmed"]
    assert (await audit.verify()).ok


@pytest.mark.parametrize(
    ("owner", "step", "slice_size"),
    [(AuditRecord, "body", SLICE), (records, "link_hash", INSERT_SLICE)],
    ids=["rendered", "chained"],
)
async def test_a_large_batch_lets_the_event_loop_serve_while_it_is_written(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch, owner: object, step: str, slice_size: int
) -> None:
    """A thousand records are rendered and chained a slice at a time, other tasks running in between (a
    gateway's requests, in production), not in one pass that holds up everything else until done."""
    audit = AuditStore(store)
    async with turns_at_each_call(monkeypatch, owner, step) as seen:
        assert await audit.append([rec(i) for i in range(1000)]) == 1000
    assert len(seen) == 1000
    assert len(set(seen)) >= 1000 // slice_size
    report = await audit.verify()
    assert report.ok and report.checked == 1000


# --- the driver-level insert stores what SQLAlchemy's own insert stores ---------------------------------

# audit_events' columns and types under another name and without its indexes (their names are taken):
# what SQLAlchemy's `insert(...)` with parameter dicts writes there is the reference.
_reference = Table(
    "audit_events_reference",
    MetaData(),
    *(
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, autoincrement=False)
        for c in audit_events.columns
    ),
)


def awkward_records() -> list[AuditRecord]:
    """Every nullable column empty and full, times in other zones and at whole seconds, text that needs
    care (quotes, backslashes, %, non-ASCII, long), and more rows than one insert slice."""
    plus_two = timezone(timedelta(hours=2))
    return [
        rec(0),
        AuditRecord(kind="grant_usage", plane="usage", at=NOW),  # principal..decision all None
        rec(1, at=datetime(2025, 3, 5, 12, 30, 1, 123456, tzinfo=plus_two)),
        rec(2, at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))),
        rec(3, at=datetime(2025, 3, 5, 10, 0, 0, 0, tzinfo=plus_two), decision=None, resource=None),
        rec(4, principal="zoë 'o\\brien' %s %(x)s", target="s3://archive/données/ключ ?.bin"),
        rec(5, target="s3://archive/" + "k" * 4000, event={"nested": {"emoji": "🔑", "n": [1, 2.5, None]}}),
        *(rec(10 + i, grant_id=None if i % 3 else f"g_{i}") for i in range(INSERT_SLICE + 5)),
    ]


async def stored(conn: AsyncConnection, table: Table) -> tuple[list[Any], list[Any]]:
    """The table's rows as SQLAlchemy reads them (typed) and as the driver returns them (raw)."""
    query = select(table).order_by(table.c.seq)
    typed = (await conn.execute(query)).all()
    raw = (await conn.exec_driver_sql(str(query.compile(dialect=conn.dialect)))).all()
    return [tuple(row) for row in typed], [tuple(row) for row in raw]


async def test_appended_rows_are_stored_exactly_as_sqlalchemys_insert_stores_them(store: SqlStore) -> None:
    audit = AuditStore(store)
    records = awkward_records()
    head_seq, head_hash = await audit.head()
    assert await audit.append(records) == head_seq + len(records)

    rows = chain(records, head_seq, head_hash)
    async with store.engine.begin() as conn:
        await conn.run_sync(_reference.create)
        await conn.execute(
            insert(_reference),
            [
                {"seq": r.seq, **r.columns, "body": r.body, "prev_hash": r.prev_hash, "hash": r.hash}
                for r in rows
            ],
        )
    async with store.engine.connect() as conn:
        typed, raw = await stored(conn, audit_events)
        assert (typed, raw) == await stored(conn, _reference)
        if store.dialect == "sqlite":  # what is on disk: text in one format, compared as text by queries
            types = await conn.exec_driver_sql("SELECT DISTINCT typeof(at) FROM audit_events")
            assert types.all() == [("text",)]
    at = [row[1] for row in typed]
    assert at == [r.at for r in records] and {moment.tzinfo for moment in at} == {UTC}
    assert typed[1][2:9] == ("grant_usage", "usage", None, None, None, None, None)
    report = await audit.verify()
    assert report.ok and report.checked == len(records)


async def test_a_naive_time_is_refused_as_sqlalchemy_refuses_it_and_nothing_is_stored(
    store: SqlStore,
) -> None:
    """As a store error (the spool tells those from others), with the whole batch rolled back."""
    audit = AuditStore(store)
    with pytest.raises(StatementError, match="timezone-aware"):
        await audit.append([rec(0), rec(1, at=datetime(2025, 3, 5, 10, 0))])
    assert await audit.head() == (0, "0" * 64)
    assert await audit.query(AuditQuery()) == []


async def test_suspending_a_principal_takes_all_their_grants_out_at_once(store: SqlStore) -> None:
    later = NOW + timedelta(days=1)
    mine = [
        await store.add_grant("bob", "archive", p, frozenset({Action.READ}), now=NOW, expires_at=later)
        for p in ("models/", "training/")
    ]
    other = await store.add_grant(
        "ann", "archive", "models/", frozenset({Action.READ}), now=NOW, expires_at=later
    )
    version = await store.version()
    suspensions = GrantSuspensions(store)
    suspended = await suspensions.suspend_principal("bob", reason="decoy", now=NOW + timedelta(minutes=1))
    assert sorted(suspended) == sorted(g.id for g in mine)
    assert await store.version() == version + 1  # one change: every gateway drops them together
    assert {g.id for g in (await store.snapshot(NOW + timedelta(minutes=2))).grants} == {other.id}
    assert await suspensions.suspend_principal("bob", reason="again", now=NOW + timedelta(minutes=3)) == []
    assert (await AuditStore(store).verify()).ok
