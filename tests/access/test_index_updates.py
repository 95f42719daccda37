"""Property: an index with changes merged in decides exactly as one built from scratch.

A gateway merges the grants changed since its version into the index it holds rather than reloading all
of them; a merge that kept a revoked grant, or a stale layout of a group, would be a missed revocation.
The oracle is the index a full load would build from the store's grants after the same changes.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from support.grant_strategies import BUCKETS, KEYS, NOW, PRINCIPALS, grants_strategy, targets_strategy

from proxy.access.decide import Allow, Deny
from proxy.access.grants import Action, Grant, Target
from proxy.access.index import GrantIndex

# What a write can do to a grant: create it, end it (revoke, suspend), or bring it back (lift a suspension).
changes_strategy = st.lists(
    st.tuples(st.sampled_from(["create", "end", "restore"]), st.integers(0, 20), grants_strategy),
    max_size=6,
)


def load_order(grants: list[Grant]) -> list[Grant]:
    return sorted(grants, key=lambda g: (g.created_at, g.id))


def apply_to_store(
    store: dict[str, Grant], changes: list[tuple[str, int, list[Grant]]]
) -> tuple[list[Grant], list[Grant]]:
    """Apply changes to `store` (id -> grant in force); return what a store read of them would give."""
    in_force: dict[str, Grant] = {}
    retired: dict[str, Grant] = {}
    ids = sorted(store)
    for kind, pick, fresh in changes:
        if kind == "create":
            for grant in fresh:
                store[grant.id] = grant
                in_force[grant.id] = grant
                retired.pop(grant.id, None)
        elif ids:
            grant_id = ids[pick % len(ids)]
            if kind == "end" and grant_id in store:
                retired[grant_id] = store.pop(grant_id)
                in_force.pop(grant_id, None)
            elif kind == "restore" and grant_id in retired:
                store[grant_id] = in_force[grant_id] = retired.pop(grant_id)
    return list(in_force.values()), list(retired.values())


def every_question(index: GrantIndex, targets: list[Target], directory: str = "a/") -> list[object]:
    """Decisions and directory probes for every principal and bucket, which also lays out every group."""
    answers: list[object] = []
    for who in PRINCIPALS:
        answers.append(index.decide(who, targets, NOW))
        for bucket in BUCKETS:
            answers.append(index.has_grant_below(who, bucket, directory, NOW))
            answers.append(index.grants_for(who, [bucket]))
    return answers


@settings(max_examples=400, deadline=None)
@given(grants_strategy, changes_strategy, targets_strategy, KEYS)
def test_merged_changes_decide_as_a_full_reload(
    before: list[Grant], changes: list[tuple[str, int, list[Grant]]], targets: list[Target], directory: str
) -> None:
    store = {g.id: g for g in before}
    held = GrantIndex.build(load_order(list(store.values())), version=1)
    every_question(held, targets, directory)  # lay groups out, as requests would have before the change

    in_force, retired = apply_to_store(store, changes)
    merged = held.updated(in_force, retired, version=2)
    reloaded = GrantIndex.build(load_order(list(store.values())), version=2)

    assert merged.groups == reloaded.groups
    assert every_question(merged, targets, directory) == every_question(reloaded, targets, directory)
    assert merged.version == 2


@given(grants_strategy, changes_strategy)
def test_merging_leaves_the_index_it_started_from_as_it_was(
    before: list[Grant], changes: list[tuple[str, int, list[Grant]]]
) -> None:
    store = {g.id: g for g in before}
    held = GrantIndex.build(load_order(list(store.values())), version=1)
    groups = {key: tuple(gs) for key, gs in held.groups.items()}
    held.updated(*apply_to_store(store, changes), version=2)
    assert held.groups == groups  # requests still reading the old view see it whole


def test_a_revoked_grant_stops_allowing_once_merged_even_when_its_group_was_laid_out() -> None:
    grant = Grant(
        id="g1",
        principal="alice",
        bucket="models",
        prefix="llama/",
        actions=frozenset({Action.READ}),
        created_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(hours=1),
    )
    target = [Target(Action.READ, "models", "llama/weights.safetensors")]
    held = GrantIndex.build([grant], version=1)
    assert isinstance(held.decide("alice", target, NOW), Allow)

    merged = held.updated([], [replace(grant, revoked_at=NOW - timedelta(seconds=1))], version=2)
    assert isinstance(merged.decide("alice", target, NOW), Deny)
    assert merged.groups == {}
    assert isinstance(held.decide("alice", target, NOW), Allow)  # the old view is unchanged
