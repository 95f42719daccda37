"""Change notifications on PostgreSQL: a committed change wakes listeners (and LiveState) at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from support.postgres import PostgresCluster

from proxy.access.grants import Action
from proxy.errors import S3Error
from proxy.live_state import LiveState
from proxy.store.engine import create_engine_for
from proxy.store.notify import listen_for_changes
from proxy.store.sql import SqlStore

NOW = datetime.now(UTC)


async def open_pg(postgres_cluster: PostgresCluster) -> SqlStore:
    return await SqlStore.open(postgres_cluster.create_database(), upgrade=True)


async def test_a_committed_change_wakes_a_listener(postgres_cluster: PostgresCluster) -> None:
    store = await open_pg(postgres_cluster)
    woken = asyncio.Event()
    listener = asyncio.create_task(listen_for_changes(store.engine, woken.set))
    try:
        await asyncio.wait_for(woken.wait(), 5)  # once on connecting: changes made meanwhile were missed
        woken.clear()
        await store.ensure_principal("ana")
        await asyncio.wait_for(woken.wait(), 1)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await store.close()


async def test_live_state_sees_a_grant_long_before_its_next_poll(postgres_cluster: PostgresCluster) -> None:
    store = await open_pg(postgres_cluster)
    await store.ensure_principal("ana")
    state = LiveState(store, b"k" * 32, interval=30.0, grace=60.0)
    await state.refresh(force=True)
    refresher = asyncio.create_task(state.run())
    listener = store.listen_for_changes(state.wake)
    assert listener is not None
    try:
        await asyncio.sleep(0.5)  # let the listener connect
        grant = await store.add_grant(
            "ana", "bucket", "p/", frozenset({Action.READ}), now=NOW, expires_at=NOW + timedelta(hours=1)
        )
        started = time.monotonic()
        while not state.view().grants.grants_for("ana", ["bucket"]):
            assert time.monotonic() - started < 1.0, "the grant was not seen within a second"
            await asyncio.sleep(0.01)
        assert state.view().grants.grants_for("ana", ["bucket"])[0].id == grant.id
        assert state.store_healthy
    finally:
        for task in (refresher, listener):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await store.close()


async def test_sqlite_has_no_listener_and_relies_on_polling(store: SqlStore) -> None:
    state = LiveState(store, b"k" * 32, interval=0.5, grace=60.0)
    assert (store.listen_for_changes(state.wake) is None) == (store.dialect == "sqlite")
    if store.dialect != "sqlite":
        return
    await state.refresh(force=True)
    refresher = asyncio.create_task(state.run())
    try:
        await store.ensure_principal("ana")
        await store.add_grant(
            "ana", "bucket", "p/", frozenset({Action.READ}), now=NOW, expires_at=NOW + timedelta(hours=1)
        )
        started = time.monotonic()
        while not state.view().grants.grants_for("ana", ["bucket"]):
            assert time.monotonic() - started < 1.5
            await asyncio.sleep(0.02)
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher


async def test_without_its_store_the_state_serves_within_grace_then_fails_closed_and_recovers(
    store: SqlStore,
) -> None:
    await store.ensure_principal("ana")
    await store.add_grant(
        "ana", "bucket", "p/", frozenset({Action.READ}), now=NOW, expires_at=NOW + timedelta(hours=1)
    )
    state = LiveState(store, b"k" * 32, interval=0.05, grace=0.5)
    await state.refresh(force=True)
    refresher = asyncio.create_task(state.run())
    # Nothing listens on port 1: the database is gone, as far as the state can tell.
    down = SqlStore(create_engine_for("postgresql://postgres@127.0.0.1:1/gone"))
    try:
        state.store = down
        lost_at = time.monotonic()
        await asyncio.sleep(0.2)
        assert not state.store_healthy  # /readyz says 503 from here on
        assert state.view().grants.grants_for("ana", ["bucket"])  # still fresh enough to serve
        await asyncio.sleep(max(0.0, lost_at + 0.6 - time.monotonic()))
        with pytest.raises(S3Error) as refused:
            state.view()
        assert refused.value.code == "ServiceUnavailable" and not state.ready

        state.store = store  # the database is back
        await asyncio.sleep(0.3)
        assert state.store_healthy and state.ready
        assert state.view().grants.grants_for("ana", ["bucket"])
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await down.close()
