"""The SQL store, run against every backend in conftest.STORE_BACKENDS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from support.turns import turns_at_each_call

from proxy.access.grants import Action
from proxy.identity.keys import derive_secret
from proxy.identity.principals import Principal
from proxy.store import sql
from proxy.store.engine import StoreError
from proxy.store.sql import SqlStore, head_revision

SERVER_KEY = b"q" * 40
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RL = frozenset({Action.READ, Action.LIST})


async def _grant(store: SqlStore, principal: str = "alice", **kwargs):
    values = {"now": NOW, "expires_at": NOW + timedelta(hours=2), **kwargs}
    return await store.add_grant(principal, "models", "llama/", RL, **values)


# --- opening and migrations ---


async def test_opening_an_empty_database_without_upgrade_says_how_to_fix_it(store_url: str) -> None:
    with pytest.raises(StoreError, match=rf"expected {head_revision()}: run `grantgate db upgrade`"):
        await SqlStore.open(store_url)


async def test_upgrade_brings_the_database_to_head_and_reopening_needs_no_upgrade(store_url: str) -> None:
    first = await SqlStore.open(store_url, upgrade=True)
    assert await first.current_revision() == head_revision()
    await first.close()
    again = await SqlStore.open(store_url)
    assert await again.version() == 0
    await again.upgrade()  # idempotent
    assert await again.current_revision() == head_revision()
    await again.close()


async def test_data_survives_reopening(store_url: str) -> None:
    first = await SqlStore.open(store_url, upgrade=True)
    grant = await _grant(first)
    await first.close()
    again = await SqlStore.open(store_url)
    assert await again.get_grant(grant.id) == grant
    await again.close()


# --- principals ---


async def test_ensure_principal_creates_then_keeps_groups_unless_given(store: SqlStore) -> None:
    created = await store.ensure_principal("alice", ["ml", "eng", "ml"])
    assert created == Principal("alice", frozenset({"ml", "eng"}))
    assert await store.ensure_principal("alice") == created
    replaced = await store.ensure_principal("alice", ["ops"])
    assert replaced == Principal("alice", frozenset({"ops"}))
    assert await store.get_principal("alice") == replaced


async def test_ensure_principal_bumps_the_version_only_when_something_changes(store: SqlStore) -> None:
    await store.ensure_principal("alice", ["ml"])
    after_create = await store.version()
    await store.ensure_principal("alice")
    await store.ensure_principal("alice", ["ml"])
    assert await store.version() == after_create
    await store.ensure_principal("alice", ["ops"])
    assert await store.version() == after_create + 1


async def test_unknown_principal_is_none_and_principals_are_listed_by_name(store: SqlStore) -> None:
    assert await store.get_principal("nobody") is None
    await store.ensure_principal("zoe")
    await store.ensure_principal("adam", ["x"])
    assert [p.name for p in await store.list_principals()] == ["adam", "zoe"]


@pytest.mark.parametrize("name", ["", "has space", "tab\there", "x" * 201])
async def test_invalid_principal_names_are_refused(store: SqlStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid principal name"):
        await store.ensure_principal(name)


# --- access keys ---


async def test_access_key_for_unknown_principal_is_refused(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="unknown principal 'ghost'"):
        await store.create_access_key("ghost", SERVER_KEY, now=NOW)
    assert await store.list_access_keys() == []


async def test_created_key_secret_is_derived_and_listing_shows_the_key(store: SqlStore) -> None:
    await store.ensure_principal("alice")
    key, secret = await store.create_access_key("alice", SERVER_KEY, now=NOW, description="laptop")
    assert secret == derive_secret(SERVER_KEY, key.access_key_id)
    assert key.principal == "alice" and key.description == "laptop" and key.revoked_at is None
    assert await store.list_access_keys() == [key]


async def test_access_keys_are_filtered_by_principal(store: SqlStore) -> None:
    await store.ensure_principal("alice")
    await store.ensure_principal("bob")
    a, _ = await store.create_access_key("alice", SERVER_KEY, now=NOW)
    b, _ = await store.create_access_key("bob", SERVER_KEY, now=NOW + timedelta(seconds=1))
    assert await store.list_access_keys("alice") == [a]
    assert await store.list_access_keys("bob") == [b]
    assert await store.list_access_keys() == [a, b]


async def test_revoking_a_key_is_idempotent_and_keeps_the_first_time(store: SqlStore) -> None:
    await store.ensure_principal("alice")
    key, _ = await store.create_access_key("alice", SERVER_KEY, now=NOW)
    before = await store.version()
    assert await store.revoke_access_key(key.access_key_id, now=NOW + timedelta(minutes=1))
    assert await store.version() == before + 1
    assert await store.revoke_access_key(key.access_key_id, now=NOW + timedelta(minutes=9))
    assert await store.version() == before + 1
    [listed] = await store.list_access_keys()
    assert listed.revoked_at == NOW + timedelta(minutes=1)


async def test_revoking_an_unknown_key_returns_false(store: SqlStore) -> None:
    assert not await store.revoke_access_key("GGNOSUCHKEYAAAAAAAAA", now=NOW)


# --- grants ---


async def test_grant_round_trips_with_all_its_fields(store: SqlStore) -> None:
    grant = await store.add_grant(
        "alice",
        "models",
        "llama/",
        frozenset({Action.WRITE, Action.READ}),
        now=NOW,
        expires_at=NOW + timedelta(hours=2),
        source="api",
        created_by="approver@example.com",
        request_id="r_123",
    )
    assert grant.id.startswith("g_") and len(grant.id) == 14
    loaded = await store.get_grant(grant.id)
    assert loaded == grant
    assert loaded is not None
    assert loaded.actions == {Action.WRITE, Action.READ}
    assert (loaded.source, loaded.request_id) == ("api", "r_123")
    assert loaded.extra == {"created_by": "approver@example.com", "revoked_by": "", "revoke_reason": ""}


async def test_timestamps_come_back_as_the_same_instant_in_utc(store: SqlStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    now_local = datetime(2025, 3, 1, 14, 0, 0, 123456, tzinfo=plus_two)
    grant = await store.add_grant("alice", "b", "", RL, now=now_local, expires_at=None)
    loaded = await store.get_grant(grant.id)
    assert loaded is not None
    assert loaded.created_at == now_local
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.created_at.tzinfo is not None
    assert loaded.expires_at is None


async def test_unknown_grant_is_none(store: SqlStore) -> None:
    assert await store.get_grant("g_nope") is None


async def test_grants_that_expire_before_they_start_are_refused(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="expire after"):
        await _grant(store, expires_at=NOW)


async def test_naive_timestamps_are_refused(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await _grant(store, now=datetime(2025, 1, 1), expires_at=None)


async def test_grant_without_actions_is_refused(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="at least one action"):
        await store.add_grant("alice", "b", "", frozenset(), now=NOW, expires_at=None)


async def test_listing_active_grants_leaves_out_expired_and_revoked(store: SqlStore) -> None:
    standing = await _grant(store, expires_at=None)
    short = await _grant(store, expires_at=NOW + timedelta(minutes=10))
    revoked = await _grant(store)
    await store.revoke_grant(revoked.id, now=NOW + timedelta(minutes=1), actor="admin")
    other = await _grant(store, principal="bob")

    assert {g.id for g in await store.list_grants()} == {standing.id, short.id, revoked.id, other.id}
    active_now = {g.id for g in await store.list_grants(active_at=NOW)}
    assert active_now == {standing.id, short.id, revoked.id, other.id}  # revocation is in the future
    later = NOW + timedelta(minutes=30)
    assert {g.id for g in await store.list_grants(active_at=later)} == {standing.id, other.id}
    assert [g.id for g in await store.list_grants(principal="alice", active_at=later)] == [standing.id]


async def test_revoking_a_grant_records_who_when_and_why(store: SqlStore) -> None:
    grant = await _grant(store)
    revoked = await store.revoke_grant(
        grant.id, now=NOW + timedelta(minutes=5), actor="cli:root", reason="done"
    )
    assert revoked is not None
    assert revoked.revoked_at == NOW + timedelta(minutes=5)
    assert revoked.extra["revoked_by"] == "cli:root"
    assert revoked.extra["revoke_reason"] == "done"
    assert not revoked.is_active(NOW + timedelta(minutes=5))
    assert await store.get_grant(grant.id) == revoked


async def test_revoking_a_grant_twice_keeps_the_first_revocation(store: SqlStore) -> None:
    grant = await _grant(store)
    first = await store.revoke_grant(grant.id, now=NOW + timedelta(minutes=1), actor="a", reason="one")
    version = await store.version()
    second = await store.revoke_grant(grant.id, now=NOW + timedelta(minutes=2), actor="b", reason="two")
    assert second == first
    assert second is not None and second.extra["revoked_by"] == "a"
    assert await store.version() == version


async def test_revoking_an_unknown_grant_returns_none(store: SqlStore) -> None:
    assert await store.revoke_grant("g_nope", now=NOW, actor="a") is None


# --- versions and snapshots ---


async def test_every_write_bumps_the_version_by_one(store: SqlStore) -> None:
    assert await store.version() == 0
    await store.ensure_principal("alice")
    assert await store.version() == 1
    key, _ = await store.create_access_key("alice", SERVER_KEY, now=NOW)
    assert await store.version() == 2
    grant = await _grant(store)
    assert await store.version() == 3
    await store.revoke_grant(grant.id, now=NOW, actor="a")
    assert await store.version() == 4
    await store.revoke_access_key(key.access_key_id, now=NOW)
    assert await store.version() == 5


async def test_failed_write_does_not_bump_the_version(store: SqlStore) -> None:
    with pytest.raises(StoreError):
        await store.create_access_key("ghost", SERVER_KEY, now=NOW)
    assert await store.version() == 0


async def test_snapshot_holds_active_grants_and_keys_with_their_groups(store: SqlStore) -> None:
    await store.ensure_principal("alice", ["ml"])
    await store.ensure_principal("bob")
    alice_key, _ = await store.create_access_key("alice", SERVER_KEY, now=NOW)
    bob_key, _ = await store.create_access_key("bob", SERVER_KEY, now=NOW)
    gone_key, _ = await store.create_access_key("bob", SERVER_KEY, now=NOW)
    await store.revoke_access_key(gone_key.access_key_id, now=NOW)
    live = await _grant(store)
    await _grant(store, expires_at=NOW + timedelta(seconds=30))
    revoked = await _grant(store)
    await store.revoke_grant(revoked.id, now=NOW, actor="a")

    snap = await store.snapshot(NOW + timedelta(minutes=1))
    assert snap.version == await store.version()
    assert snap.grants == (live,)
    assert dict(snap.keys) == {
        alice_key: Principal("alice", frozenset({"ml"})),
        bob_key: Principal("bob"),
    }


async def test_snapshot_sees_new_groups_of_a_keys_principal(store: SqlStore) -> None:
    await store.ensure_principal("alice", ["ml"])
    await store.create_access_key("alice", SERVER_KEY, now=NOW)
    await store.ensure_principal("alice", ["ml", "admins"])
    [(_, principal)] = (await store.snapshot(NOW)).keys
    assert principal.groups == {"ml", "admins"}


async def test_a_large_snapshot_lets_the_event_loop_serve_while_it_is_loaded(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows become grants a slice at a time with other tasks running in between (a gateway's requests,
    while it reloads 100 000 grants), not in one pass that holds them all up."""
    await asyncio.gather(*(_grant(store, principal=f"user{i}") for i in range(40)))
    monkeypatch.setattr(sql, "SNAPSHOT_SLICE", 4)
    async with turns_at_each_call(monkeypatch, sql, "grant_of_row") as seen:
        snap = await store.snapshot(NOW)
    assert len(snap.grants) == len(seen) == 40
    assert len(set(seen)) >= 40 // 4


async def test_concurrent_writes_all_land_and_each_bumps_the_version(store: SqlStore) -> None:
    await asyncio.gather(*(_grant(store, principal=f"user{i}") for i in range(20)))
    assert await store.version() == 20
    assert len(await store.list_grants()) == 20


async def test_writers_in_two_store_instances_do_not_lose_updates(store_url: str) -> None:
    # Two gateways (or a gateway and the CLI) share one database.
    one = await SqlStore.open(store_url, upgrade=True)
    two = await SqlStore.open(store_url)
    try:
        await asyncio.gather(*(_grant(s, principal=f"u{i}") for i in range(10) for s in (one, two)))
        assert await one.version() == await two.version() == 20
        assert len((await two.snapshot(NOW)).grants) == 20
    finally:
        await one.close()
        await two.close()
