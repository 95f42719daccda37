"""The webhook outbox on SQLite and PostgreSQL: a row is held by one process at a time, through its lease."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from proxy.store.outbox import StoredDelivery, WebhookOutbox
from proxy.store.sql import SqlStore

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def delivery(n: int) -> StoredDelivery:
    return StoredDelivery(f"e{n}.hook", "f" * 64, "grant_created", f"e{n}", b'{"n":%d}' % n, 1, NOW)


async def test_only_rows_whose_lease_ran_out_are_claimed_and_then_held(store: SqlStore) -> None:
    outbox = WebhookOutbox(store)
    await outbox.add([delivery(1), delivery(2)], now=NOW, lease_until=NOW - timedelta(seconds=1))
    await outbox.add([delivery(3)], now=NOW, lease_until=NOW + timedelta(minutes=1))  # someone holds it
    claimed = await outbox.claim(now=NOW, lease_until=NOW + timedelta(minutes=1))
    assert sorted(d.id for d in claimed) == ["e1.hook", "e2.hook"]
    assert claimed[0].body == b'{"n":1}' and claimed[0].due_at == NOW
    assert await outbox.claim(now=NOW, lease_until=NOW + timedelta(minutes=1)) == []
    later = NOW + timedelta(minutes=2)  # every lease ran out
    assert len(await outbox.claim(now=later, lease_until=later + timedelta(minutes=1))) == 3


async def test_two_gateways_sweeping_at_once_never_claim_the_same_row(
    store: SqlStore, store_url: str
) -> None:
    other_store = await SqlStore.open(store_url)
    try:
        mine, theirs = WebhookOutbox(store), WebhookOutbox(other_store)
        await mine.add([delivery(n) for n in range(60)], now=NOW, lease_until=NOW)
        hold = NOW + timedelta(minutes=1)
        results = await asyncio.gather(
            *(box.claim(now=NOW, lease_until=hold, limit=40) for box in (mine, theirs, mine, theirs))
        )
    finally:
        await other_store.close()
    ids = [d.id for claimed in results for d in claimed]
    assert len(ids) == len(set(ids)) == 60


async def test_a_renewed_lease_keeps_a_row_and_a_released_one_frees_it(store: SqlStore) -> None:
    outbox = WebhookOutbox(store)
    await outbox.add([delivery(1)], now=NOW, lease_until=NOW + timedelta(seconds=10))
    later = NOW + timedelta(seconds=20)
    await outbox.hold(["e1.hook"], later + timedelta(seconds=10))  # renewed in time
    assert await outbox.claim(now=later, lease_until=later + timedelta(minutes=1)) == []
    await outbox.hold(["e1.hook"], later)  # let go of at shutdown
    freed = await outbox.claim(now=later, lease_until=later + timedelta(minutes=1))
    assert [d.id for d in freed] == ["e1.hook"]
    await outbox.reschedule("e1.hook", 3, later + timedelta(seconds=5))
    await outbox.done("e1.hook")
    assert await outbox.claim(now=later + timedelta(hours=1), lease_until=later + timedelta(hours=2)) == []
