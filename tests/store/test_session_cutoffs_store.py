"""Revoking a grant records a session cut-off for its principal, in the same transaction, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.access.grants import Action
from proxy.store.sql import SqlStore

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def add(store: SqlStore, principal: str) -> str:
    grant = await store.add_grant(
        principal, "bucket", "models/", frozenset({Action.READ}), now=NOW, expires_at=NOW + timedelta(days=1)
    )
    return grant.id


async def test_revoking_a_grant_cuts_off_its_principals_sessions(store: SqlStore) -> None:
    first = await add(store, "system:serviceaccount:ml:trainer")
    await add(store, "someone-else")
    assert (await store.snapshot(NOW)).sessions_not_before == {}
    before = await store.version()

    await store.revoke_grant(first, now=NOW + timedelta(minutes=1), actor="test")
    snapshot = await store.snapshot(NOW + timedelta(minutes=2))
    assert dict(snapshot.sessions_not_before) == {
        "system:serviceaccount:ml:trainer": NOW + timedelta(minutes=1)
    }
    assert snapshot.version > before


async def test_cut_off_moves_forward_only(store: SqlStore) -> None:
    one, two = await add(store, "p"), await add(store, "p")
    await store.revoke_grant(one, now=NOW + timedelta(minutes=10), actor="test")
    # A revocation stamped earlier (a host with a slow clock) must not reopen sessions.
    await store.revoke_grant(two, now=NOW + timedelta(minutes=5), actor="test")
    assert (await store.snapshot(NOW)).sessions_not_before["p"] == NOW + timedelta(minutes=10)
    three = await add(store, "p")
    await store.revoke_grant(three, now=NOW + timedelta(minutes=20), actor="test")
    assert (await store.snapshot(NOW)).sessions_not_before["p"] == NOW + timedelta(minutes=20)


async def test_revoking_an_already_revoked_or_unknown_grant_records_nothing_new(store: SqlStore) -> None:
    grant_id = await add(store, "p")
    await store.revoke_grant(grant_id, now=NOW + timedelta(minutes=1), actor="test")
    await store.revoke_grant(grant_id, now=NOW + timedelta(minutes=9), actor="test")
    assert await store.revoke_grant("g_unknown", now=NOW + timedelta(minutes=9), actor="test") is None
    assert dict((await store.snapshot(NOW)).sessions_not_before) == {"p": NOW + timedelta(minutes=1)}
