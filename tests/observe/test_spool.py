"""The audit spool's files: batches survive the round trip to disk exactly, one process per directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.audit.records import AuditRecord, Usage
from proxy.audit.spool import SpoolDir, SpooledBatch, decode_batch, encode_batch

AT = datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


def batch(i: int = 0) -> SpooledBatch:
    record = AuditRecord(
        kind="s3_request",
        plane="data",
        at=AT,
        principal="ana",
        target=f"s3://bucket/k{i}",
        grant_id="g_1",
        decision="allow",
        event={"request_id": f"R{i}", "bytes_out": 12, "groups": ["ml"], "nested": {"x": None}},
    )
    usage = Usage("g_1", "ana", requests=2, bytes_read=12, first_used_at=AT, last_used_at=None)
    return SpooledBatch((record,), (usage,), (("models", "ml", "ana", AT),), after_seq=41)


def test_a_batch_decodes_to_what_was_encoded_and_its_records_hash_the_same() -> None:
    original = batch()
    decoded = decode_batch(encode_batch(original))
    assert decoded == original
    # The duplicate check compares stored bodies: they must be byte for byte what a direct append stores.
    assert decoded.records[0].body() == original.records[0].body()


def test_batches_come_back_in_the_order_they_were_spooled(tmp_path: Path) -> None:
    spool = SpoolDir(tmp_path / "spool")
    try:
        for i in range(5):
            spool.add(batch(i))
        pending = spool.pending()
        assert [decode_batch(p.read_text()).records[0].target for p in pending] == [
            f"s3://bucket/k{i}" for i in range(5)
        ]
        spool.remove(pending[0])
        assert len(spool.pending()) == 4
        assert not list((tmp_path / "spool").glob("*.tmp"))
    finally:
        spool.close()


def test_a_spool_directory_serves_one_process_at_a_time(tmp_path: Path) -> None:
    first = SpoolDir(tmp_path / "spool")
    with pytest.raises(OSError, match="in use by another process"):
        SpoolDir(tmp_path / "spool")
    first.close()
    SpoolDir(tmp_path / "spool").close()  # free again once the first lets go
