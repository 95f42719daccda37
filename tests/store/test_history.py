"""Grants by bucket and time range, on SQLite and PostgreSQL: those in force at some moment of the range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.access.grants import Action
from proxy.store.history import grants_in_range
from proxy.store.sql import SqlStore

NOW = datetime(2025, 3, 5, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
READ = frozenset({Action.READ})


async def test_only_grants_on_the_bucket_in_force_during_the_range_are_read(store: SqlStore) -> None:
    async def grant(who: str, bucket: str, at: timedelta, ttl: timedelta | None) -> str:
        made = await store.add_grant(
            who, bucket, "models/", READ, now=NOW + at, expires_at=None if ttl is None else NOW + at + ttl
        )
        return made.id

    before = await grant("early", "archive", -5 * HOUR, HOUR)  # ended before the range
    during = await grant("during", "archive", HOUR, HOUR)
    standing = await grant("standing", "archive", -9 * HOUR, None)
    after = await grant("late", "archive", 5 * HOUR, HOUR)  # starts after the range
    await grant("other", "elsewhere", HOUR, HOUR)  # another bucket
    revoked = await grant("revoked", "archive", -2 * HOUR, 8 * HOUR)
    await store.revoke_grant(revoked, now=NOW - HOUR, actor="test")  # before the range began

    found = await grants_in_range(store, "archive", NOW, NOW + 3 * HOUR, limit=10)
    assert [g.id for g in found] == [standing, during]
    assert before not in {g.id for g in found} and after not in {g.id for g in found}
    assert len(await grants_in_range(store, "archive", NOW - 6 * HOUR, NOW + 9 * HOUR, limit=3)) == 3
