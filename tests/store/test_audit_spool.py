"""The audit spool over a real store (SQLite and PostgreSQL): what an unreachable store could not take
is written later, in order, exactly once, even when an earlier attempt did commit."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.world import free_port

from proxy.audit.records import AuditRecord, Usage
from proxy.audit.spool import SpoolDir, SpooledBatch, SpoolingAudit, start_spooling
from proxy.audit.store import AuditQuery, AuditStore
from proxy.config import load_settings
from proxy.store.engine import create_engine_for
from proxy.store.sql import SqlStore

NOW = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)


def rec(i: int) -> AuditRecord:
    return AuditRecord(
        kind="s3_request",
        plane="data",
        at=NOW + timedelta(seconds=i),
        principal="ana",
        target=f"s3://bucket/k{i}",
        grant_id="g_1",
        decision="allow",
        event={"request_id": f"R{i}"},
    )


def unreachable_store() -> SqlStore:
    # Nothing listens on port 1: every connection is refused, as when the database is down.
    return SqlStore(create_engine_for("postgresql://postgres@127.0.0.1:1/gone"))


async def stored_targets(store: SqlStore) -> list[str | None]:
    return [e.body["target"] for e in await AuditStore(store).query(AuditQuery())]


async def test_batches_the_store_cannot_take_are_spooled_and_written_by_the_next_start(
    store: SqlStore, tmp_path: Path
) -> None:
    down = unreachable_store()
    spooling = SpoolingAudit(AuditStore(down), SpoolDir(tmp_path / "spool"))
    try:
        await spooling.append([rec(0), rec(1)], [Usage("g_1", "ana", requests=2, bytes_read=10)])
        await spooling.append([rec(2)])  # behind the first, in order
        await spooling.remember_readers([("models", "ml", "ana", NOW)])
        assert spooling.spooled == 3 and spooling.backlog == 3
    finally:
        await spooling.close()
        await down.close()

    # The process comes back (or the store does): the spool is replayed in the order it was written.
    back = SpoolingAudit(AuditStore(store), SpoolDir(tmp_path / "spool"))
    try:
        assert await back.drain()
        assert back.backlog == 0
    finally:
        await back.close()
    assert await stored_targets(store) == ["s3://bucket/k0", "s3://bucket/k1", "s3://bucket/k2"]
    audit = AuditStore(store)
    usage = await audit.usage("g_1")
    assert usage is not None and (usage.requests, usage.bytes_read) == (2, 10)
    assert ("models", "ml") in await audit.readers()
    assert (await audit.verify()).ok


async def test_a_spooled_batch_that_had_in_fact_been_committed_is_not_written_twice(
    store: SqlStore, tmp_path: Path
) -> None:
    audit = AuditStore(store)
    head_before = await audit.append([rec(0)])
    # The commit landed but the writer saw the connection drop (or died before deleting the file).
    landed = SpooledBatch((rec(1), rec(2)), (Usage("g_1", "ana", requests=2),), (), after_seq=head_before)
    await audit.append(list(landed.records), landed.usage)
    spool = SpoolDir(tmp_path / "spool")
    spool.add(landed)
    spool.add(SpooledBatch((rec(3),), (), (), after_seq=head_before))  # this one never arrived
    spooling = SpoolingAudit(AuditStore(store), spool)
    try:
        assert await spooling.drain()
    finally:
        await spooling.close()
    assert await stored_targets(store) == [f"s3://bucket/k{i}" for i in range(4)]
    usage = await audit.usage("g_1")
    assert usage is not None and usage.requests == 2  # the landed batch's usage was not added again


async def test_appends_go_straight_to_the_store_while_it_answers(store: SqlStore, tmp_path: Path) -> None:
    spooling = SpoolingAudit(AuditStore(store), SpoolDir(tmp_path / "spool"))
    try:
        await spooling.start()
        assert await spooling.append([rec(0)]) == 1
        assert await spooling.append([rec(1)]) == 2
        assert spooling.spooled == 0 and spooling.backlog == 0
    finally:
        await spooling.close()


async def test_a_spool_directory_that_cannot_be_created_falls_back_to_the_temp_dir(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the spool should go")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[server]\ns3_port = {free_port()}\n\n[audit]\nspool_dir = "not-a-dir/spool"\n')
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    spooling = await start_spooling(AuditStore(store), load_settings(config).audit_spool_dir())
    assert spooling is not None
    try:
        assert spooling.spool.path.is_relative_to(tmp_path / "tmp")
        assert spooling.spool.path.is_dir()
    finally:
        await spooling.close()
