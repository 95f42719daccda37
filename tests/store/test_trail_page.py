"""A page of the trail on SQLite and PostgreSQL: filters no index serves search a window at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.audit.records import AuditRecord
from proxy.audit.store import AuditQuery, AuditStore
from proxy.control import trail
from proxy.control.trail import trail_page, window
from proxy.store.sql import SqlStore

NOW = datetime(2025, 3, 5, 10, 0, tzinfo=UTC)


def request(i: int, principal: str, action: str) -> AuditRecord:
    return AuditRecord(
        kind="s3_request",
        plane="data",
        at=NOW + timedelta(seconds=i),
        principal=principal,
        resource="models",
        target=f"s3://archive/models/{i}",
        decision="allow",
        event={"action": action},
    )


def test_only_queries_no_index_serves_are_windowed() -> None:
    assert window(AuditQuery(principal="alice"), 10**6).after_seq == 0
    assert window(AuditQuery(resources=("models",)), 10**6).after_seq == 0
    assert window(AuditQuery(action="write"), 10**6).after_seq == 10**6 - trail.SCAN_WINDOW
    assert (
        window(
            AuditQuery(resource="s3://archive/m"),
            10**6,
        ).after_seq
        == 10**6 - trail.SCAN_WINDOW
    )
    assert window(AuditQuery(action="write", before_seq=500), 10**6).after_seq == 0


async def test_an_unindexed_filter_pages_back_a_window_at_a_time(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trail, "SCAN_WINDOW", 4)
    audit = AuditStore(store)
    # seq 1 and 9 are writes; everything else reads.
    await audit.append([request(i, "alice", "write" if i in (0, 8) else "read") for i in range(10)])

    first = await trail_page(audit, AuditQuery(action="write"), 5)  # searches 7..10
    assert ([e.seq for e in first.events], first.older) == ([9], 7)
    second = await trail_page(audit, AuditQuery(action="write", before_seq=first.older), 5)  # 3..6
    assert ([e.seq for e in second.events], second.older) == ([], 3)
    third = await trail_page(audit, AuditQuery(action="write", before_seq=second.older), 5)  # 1..2
    assert ([e.seq for e in third.events], third.older) == ([1], None)

    # An indexed filter reads its matches whatever their distance.
    by_principal = await trail_page(audit, AuditQuery(principal="alice", action="write"), 5)
    assert ([e.seq for e in by_principal.events], by_principal.older) == ([9, 1], None)
