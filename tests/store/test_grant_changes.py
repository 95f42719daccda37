"""A gateway reloads only the grants a write changed, and still holds exactly what a full load would.

Every write path that creates a grant or changes whether one is in force runs against a real store (SQLite
and PostgreSQL); after each, the gateway's state is refreshed and compared with a full load of the store.
A write that forgot to stamp the grant it changed fails here: the refreshed state would still hold it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, delete, insert, update
from support.policies import MODELS_RULE

from proxy import live_state as state_module
from proxy.access.decide import Allow, Deny
from proxy.access.grants import Action, Grant, Target
from proxy.access.index import GrantIndex
from proxy.access.policy import Policy, Resource, ResourcePath, StandingAccess
from proxy.errors import S3Error
from proxy.grant_source import Snapshot
from proxy.identity.keyring import KeyRing
from proxy.identity.principals import Principal
from proxy.live_state import LiveState
from proxy.observe.events import EventBus
from proxy.store.engine import create_engine_for
from proxy.store.schema import grants, principals, store_state
from proxy.store.sql import SqlStore, _alembic_config
from proxy.store.suspensions import GrantSuspensions
from proxy.workflow.service import Workflow

NOW = datetime.now(UTC).replace(microsecond=0)
SERVER_KEY = b"k" * 32
BUCKET = "models-bucket"
HOUR = timedelta(hours=1)
WHY = "evaluate the new checkpoint"

POLICY = Policy(
    resources=(Resource("models", (ResourcePath(BUCKET, "models/"),)),),
    rules=(MODELS_RULE,),
    standing=(StandingAccess("inference", "models", frozenset({Action.READ})),),
    admin_groups=frozenset({"admins"}),
)


class Loads:
    """The store as the gateway's state sees it (a GrantSource), recording every snapshot asked for:
    from which version, and what came back."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.seen: list[tuple[int | None, Snapshot]] = []

    async def version(self) -> int:
        return await self.store.version()

    async def snapshot(self, now: datetime, *, since: int | None = None) -> Snapshot:
        snapshot = await self.store.snapshot(now, since=since)
        self.seen.append((since, snapshot))
        return snapshot

    @property
    def last(self) -> tuple[int | None, Snapshot]:
        return self.seen[-1]


def watching(store: SqlStore) -> tuple[Loads, LiveState]:
    """A gateway's state over `store`, and the loads it makes."""
    loads = Loads(store)
    return loads, LiveState(loads, SERVER_KEY, interval=60.0, grace=600.0)


async def alice_reads(store: SqlStore, prefix: str = "models/", lasting: timedelta = HOUR) -> Grant:
    return await store.add_grant(
        "alice", BUCKET, prefix, frozenset({Action.READ}), now=NOW, expires_at=NOW + lasting
    )


def in_force(index: GrantIndex, now: datetime) -> set[str]:
    return {g.id for group in index.groups.values() for g in group if g.is_active(now)}


async def full_key_ring(store: SqlStore) -> KeyRing:
    full = await store.snapshot(NOW)
    return KeyRing.build(full.keys, SERVER_KEY, full.sessions_not_before)


def ring(keys: KeyRing) -> tuple[dict[str, object], dict[str, datetime]]:
    return dict(keys.entries), dict(keys.sessions_not_before)


async def full_load(store: SqlStore, now: datetime) -> set[str]:
    return {g.id for g in (await store.snapshot(now)).grants}


@pytest.fixture
async def people(store: SqlStore) -> dict[str, Principal]:
    groups = {"alice": ["ml"], "bob": ["infra"], "carol": ["security"], "root": ["admins"], "inference": []}
    return {name: await store.ensure_principal(name, g, now=NOW) for name, g in groups.items()}


async def test_every_grant_write_reaches_the_gateway_as_a_change(
    store: SqlStore, people: dict[str, Principal]
) -> None:
    loads, state = watching(store)
    await state.refresh(force=True)
    flow = Workflow(store, POLICY, EventBus(), clock=lambda: NOW)
    unstanding = Workflow(store, replace(POLICY, standing=()), EventBus(), clock=lambda: NOW)
    suspensions = GrantSuspensions(store)
    made: dict[str, str] = {}

    async def add() -> None:
        grant = await alice_reads(store, "models/a/")
        made["added"] = grant.id

    async def instant() -> None:
        outcome = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
        assert outcome.grant is not None
        made["instant"] = outcome.grant.id

    async def approved() -> None:
        asked = await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
        outcome = await flow.approve(asked.request.id, people["carol"])
        assert outcome.grant is not None
        made["approved"] = outcome.grant.id

    async def revoke() -> None:
        await flow.revoke(made["instant"], people["root"], "done")

    async def suspend() -> None:
        assert await suspensions.suspend_grant(made["approved"], reason="burst of downloads", now=NOW)

    async def lift() -> None:
        assert await suspensions.lift_suspension(made["approved"], actor="carol", now=NOW)

    async def standing() -> None:
        created, _ = await flow.sync_standing()
        assert created

    async def standing_removed() -> None:
        _, revoked = await unstanding.sync_standing()
        assert revoked

    async def new_key() -> None:
        made["key"] = (await store.create_access_key("alice", SERVER_KEY, now=NOW))[0].access_key_id
        await store.create_access_key("alice", SERVER_KEY, now=NOW)

    async def regrouped() -> None:
        await store.ensure_principal("alice", ["ml", "research"], now=NOW)

    async def key_revoked() -> None:
        assert await store.revoke_access_key(made["key"], now=NOW)

    # name, the write, grants it changes, keys it changes
    steps: list[tuple[str, Callable[[], Awaitable[Any]], int, int]] = [
        ("add_grant", add, 1, 0),
        ("instant request", instant, 1, 0),
        ("approved request", approved, 1, 0),
        ("revoke", revoke, 1, 0),
        ("suspend", suspend, 1, 0),
        ("lift suspension", lift, 1, 0),
        ("standing access created", standing, 1, 0),
        ("standing access removed", standing_removed, 1, 0),
        ("new access keys", new_key, 0, 2),
        ("principal's groups changed", regrouped, 0, 2),  # both of alice's keys
        ("access key revoked", key_revoked, 0, 1),
    ]
    for name, step, grants_changed, keys_changed in steps:
        held = state.version
        await step()
        await state.refresh()
        since, snapshot = loads.last
        assert since == held, f"{name}: reloaded whole, not as a change"
        assert len(snapshot.grants) + len(snapshot.retired) == grants_changed, name
        assert len(snapshot.keys) == keys_changed, name
        view = state.view()
        assert view.version == await store.version(), name
        assert in_force(view.grants, NOW) == await full_load(store, NOW), name
        assert ring(view.keys) == ring(await full_key_ring(store)), name

    # The keys came along: alice's remaining key resolves with her groups as they are now, the revoked
    # one not at all.
    alice_keys = await store.list_access_keys("alice")
    [kept] = [k.access_key_id for k in alice_keys if k.access_key_id != made["key"]]
    caller, _ = state.view().keys.resolve(kept, None, NOW)
    assert caller.principal.groups == frozenset({"ml", "research"})
    with pytest.raises(S3Error):
        state.view().keys.resolve(made["key"], None, NOW)
    # And the revoked grant denies through the index the gateway decides with.
    target = [Target(Action.READ, BUCKET, "models/weights.safetensors")]
    assert isinstance(state.view().grants.decide("bob", target, NOW), Deny)
    assert isinstance(state.view().grants.decide("alice", target, NOW), Allow)


async def test_a_change_reads_only_what_changed_however_many_grants_there_are(
    store: SqlStore, people: dict[str, Principal]
) -> None:
    await _many_grants(store, 3000)
    loads, state = watching(store)
    await state.refresh(force=True)
    assert len(loads.last[1].grants) == 3000
    grant = await alice_reads(store)
    await state.refresh()
    assert [g.id for g in loads.last[1].grants] == [grant.id]
    await store.revoke_grant(grant.id, now=NOW, actor="root")
    await state.refresh()
    assert [g.id for g in loads.last[1].retired] == [grant.id]
    assert len(state.view().grants) == 3000


async def test_now_and_then_everything_is_reloaded_and_lapsed_grants_pruned(
    store: SqlStore, people: dict[str, Principal], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads, state = watching(store)
    await alice_reads(store, lasting=timedelta(minutes=1))
    monkeypatch.setattr(state_module, "datetime", _At(NOW))
    await state.refresh(force=True)
    assert len(state.view().grants) == 1
    monkeypatch.setattr(state_module, "FULL_RESYNC_SECONDS", 0.0)
    monkeypatch.setattr(state_module, "datetime", _At(NOW + timedelta(minutes=2)))
    await state.refresh()
    assert loads.last[0] is None  # a full load, though the version did not move
    assert len(state.view().grants) == 0


async def test_a_store_whose_version_went_back_is_loaded_whole(
    store: SqlStore, people: dict[str, Principal]
) -> None:
    # A restored backup: grants the gateway holds may exist nowhere in the store any more.
    loads, state = watching(store)
    await state.refresh(force=True)
    restored_version = await store.version()
    grant = await alice_reads(store)
    await state.refresh()
    assert in_force(state.view().grants, NOW) == {grant.id}
    async with store.engine.begin() as conn:
        await conn.execute(delete(grants))
        await conn.execute(update(store_state).values(value=restored_version - 1))
    await state.refresh()
    assert loads.last[0] is None
    assert in_force(state.view().grants, NOW) == set()


async def test_grants_from_before_the_change_stamps_are_loaded_whole_and_then_tracked(
    store_url: str,
) -> None:
    # A grant written before migration 0005 gets stamp 0: a first load reads it like any other, and
    # revoking it afterwards reaches a running gateway as a change.
    engine = create_engine_for(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate_to, "0004")
            await conn.execute(principals.insert().values(name="alice", groups=[], created_at=NOW))
            await conn.execute(insert(grants).values(**_row("g_legacy", "alice", "models/")))
    finally:
        await engine.dispose()
    store = await SqlStore.open(store_url, upgrade=True)
    try:
        loads, state = watching(store)
        await state.refresh(force=True)
        assert in_force(state.view().grants, NOW) == {"g_legacy"}
        await store.revoke_grant("g_legacy", now=NOW, actor="root")
        await state.refresh()
        assert [g.id for g in loads.last[1].retired] == ["g_legacy"]
        assert in_force(state.view().grants, NOW) == set()
    finally:
        await store.close()


def _migrate_to(conn: Connection, revision: str) -> None:
    config = _alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


class _At:
    """Stands in for the `datetime` class in proxy.live_state: `now()` is a fixed moment."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self, tz: Any = None) -> datetime:
        return self.moment


def _row(grant_id: str, principal: str, prefix: str) -> dict[str, Any]:
    return {
        "id": grant_id,
        "principal": principal,
        "bucket": BUCKET,
        "prefix": prefix,
        "actions": "read",
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "revoked_at": None,
        "revoked_by": "",
        "revoke_reason": "",
        "source": "cli",
        "request_id": None,
        "created_by": "",
    }


async def _many_grants(store: SqlStore, count: int) -> None:
    engine = store.engine
    async with engine.begin() as conn:
        await conn.execute(
            insert(grants), [_row(f"g_{i:06d}", f"user{i % 50}", f"shards/{i:05d}/") for i in range(count)]
        )
