"""The live state loads from any GrantSource, not only the SQL store: the interface is all it relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.access.decide import Allow, Deny
from proxy.access.grants import Action, Grant, Target
from proxy.grant_source import Snapshot
from proxy.live_state import LiveState

NOW = datetime.now(UTC).replace(microsecond=0)
BUCKET = "models-bucket"


def reads(grant_id: str, principal: str) -> Grant:
    return Grant(
        grant_id, principal, BUCKET, "models/", frozenset({Action.READ}), NOW, NOW + timedelta(hours=1)
    )


class Grants:
    """A source held in memory: grants in force, a counter bumped per change, each change's version."""

    def __init__(self) -> None:
        self.counter = 0
        self.in_force: dict[str, tuple[int, Grant]] = {}
        self.retired: dict[str, tuple[int, Grant]] = {}
        self.asked: list[int | None] = []

    def add(self, grant: Grant) -> None:
        self.counter += 1
        self.in_force[grant.id] = (self.counter, grant)

    def retire(self, grant_id: str) -> None:
        self.counter += 1
        self.retired[grant_id] = (self.counter, self.in_force.pop(grant_id)[1])

    async def version(self) -> int:
        return self.counter

    async def snapshot(self, now: datetime, *, since: int | None = None) -> Snapshot:
        self.asked.append(since)
        if since is None:
            return Snapshot(self.counter, tuple(g for _, g in self.in_force.values()), ())
        return Snapshot(
            self.counter,
            tuple(g for v, g in self.in_force.values() if v > since),
            (),
            since=since,
            retired=tuple(g for v, g in self.retired.values() if v > since),
        )


def allowed(state: LiveState, principal: str) -> bool:
    target = [Target(Action.READ, BUCKET, "models/weights.safetensors")]
    return isinstance(state.view().grants.decide(principal, target, NOW), Allow)


async def test_live_state_follows_an_in_memory_grant_source_change_by_change() -> None:
    source = Grants()
    source.add(reads("g_alice", "alice"))
    state = LiveState(source, b"k" * 32, interval=60.0, grace=600.0)
    await state.refresh()
    assert allowed(state, "alice") and not allowed(state, "bob")

    source.add(reads("g_bob", "bob"))
    source.retire("g_alice")
    await state.refresh()
    assert allowed(state, "bob")
    assert isinstance(
        state.view().grants.decide("alice", [Target(Action.READ, BUCKET, "models/x")], NOW), Deny
    )
    assert state.version == 3
    # A first full load, then only what changed after the version held.
    assert source.asked == [None, 1]

    await state.refresh()  # nothing changed: no snapshot asked for
    assert source.asked == [None, 1]
