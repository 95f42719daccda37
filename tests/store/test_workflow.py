"""The access workflow over a real store, on SQLite and PostgreSQL: lifecycle, concurrency, expiry, events."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from support.clock import T0, Clock
from support.policies import MODELS_RULE

from proxy.access.events import (
    ApprovalRecorded,
    BreakGlassReviewed,
    BreakGlassUsed,
    GrantCreated,
    GrantExpired,
    GrantExpiring,
    GrantRevoked,
    RequestCreated,
    RequestDecided,
)
from proxy.access.grants import Action, Target
from proxy.access.index import GrantIndex
from proxy.access.policy import Policy, Resource, ResourcePath, Rule, StandingAccess
from proxy.access.requests import RequestStatus, Via
from proxy.identity.principals import Principal
from proxy.observe.events import AnomalyAlert, EventBus
from proxy.store.schema import api_tokens
from proxy.store.sql import SqlStore
from proxy.store.suspensions import GrantSuspensions
from proxy.workflow.extend import extend_grant
from proxy.workflow.service import Conflict, Forbidden, Invalid, NotFound, Workflow

BUCKET = "archive"
WHY = "evaluate the new checkpoint"

POLICY = Policy(
    resources=(
        Resource("models", (ResourcePath(BUCKET, "models/"),)),
        Resource("training-data", (ResourcePath(BUCKET, "training-data/"),)),
    ),
    rules=(
        MODELS_RULE,
        Rule(
            resource="training-data",
            requester_groups=frozenset({"ml"}),
            actions=frozenset({Action.READ}),
            approver_groups=frozenset({"security", "data-owners"}),
            approvals_required=2,
            break_glass=True,
        ),
    ),
    standing=(StandingAccess("inference", "models", frozenset({Action.READ, Action.LIST})),),
    pending_ttl=timedelta(hours=24),
    expiry_warning=timedelta(minutes=15),
    admin_groups=frozenset({"admins"}),
)


@pytest.fixture
async def flow(store: SqlStore, clock: Clock, events: list[Any]) -> Workflow:
    bus = EventBus()
    bus.subscribe(events.append)
    return Workflow(store, POLICY, bus, clock=clock)


@pytest.fixture
async def people(store: SqlStore) -> dict[str, Principal]:
    groups = {
        "alice": ["ml"],
        "bob": ["infra"],
        "carol": ["security"],
        "dave": ["security"],
        "erin": ["data-owners"],
        "root": ["admins"],
    }
    return {name: await store.ensure_principal(name, g, now=T0) for name, g in groups.items()}


def kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


# --- the lifecycle ---


async def test_instant_request_is_approved_with_a_grant_and_its_events(
    flow: Workflow, people: dict[str, Principal], events: list[Any], store: SqlStore
) -> None:
    before = await store.version()
    outcome = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
    assert outcome.request.status is RequestStatus.APPROVED
    assert outcome.grant is not None and outcome.request.grant_id == outcome.grant.id
    assert outcome.grant.expires_at == T0 + timedelta(hours=1)
    assert outcome.grant.request_id == outcome.request.id
    assert await store.version() > before  # gateways reload
    assert kinds(events) == ["request_created", "request_decided", "grant_created"]
    assert all(e.request.id == outcome.request.id for e in events if hasattr(e, "request"))
    assert (await flow.requests.get_request(outcome.request.id)) == outcome.request


async def test_approval_creates_a_grant_whose_clock_starts_at_approval(
    flow: Workflow, people: dict[str, Principal], clock: Clock, events: list[Any]
) -> None:
    created = await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], "2h", WHY)
    assert created.request.status is RequestStatus.PENDING and created.grant is None
    clock.advance(hours=3)
    approved = await flow.approve(created.request.id, people["carol"], "ok for the eval")
    assert approved.request.status is RequestStatus.APPROVED
    assert approved.request.decided_by == "carol" and approved.request.decision_comment == "ok for the eval"
    assert approved.grant is not None
    assert approved.grant.created_at == T0 + timedelta(hours=3)
    assert approved.grant.expires_at == T0 + timedelta(hours=5)
    assert approved.grant.extra["created_by"] == "carol"
    assert kinds(events) == ["request_created", "approval_recorded", "request_decided", "grant_created"]
    decided = events[2]
    assert isinstance(decided, RequestDecided)
    assert (decided.actor, decided.reason, decided.decision) == ("carol", "ok for the eval", "approved")


async def test_self_approval_is_refused_and_changes_nothing(
    flow: Workflow, people: dict[str, Principal], store: SqlStore
) -> None:
    # alice joins security too: she still may not approve her own request.
    alice = await store.ensure_principal("alice", ["ml", "security"])
    created = await flow.request_access(alice, f"s3://{BUCKET}/models/", ["read"], None, WHY)
    with pytest.raises(Forbidden) as exc:
        await flow.approve(created.request.id, alice)
    assert exc.value.code == "self_approval"
    still = await flow.requests.get_request(created.request.id)
    assert still is not None and still.status is RequestStatus.PENDING and still.approvals == ()


async def test_approver_outside_the_group_is_refused(flow: Workflow, people: dict[str, Principal]) -> None:
    created = await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], None, WHY)
    with pytest.raises(Forbidden) as exc:
        await flow.approve(created.request.id, people["bob"])
    assert exc.value.code == "not_an_approver"


async def test_n_of_m_needs_distinct_approvers_and_the_same_one_twice_counts_once(
    flow: Workflow, people: dict[str, Principal], events: list[Any]
) -> None:
    created = await flow.request_access(people["alice"], f"s3://{BUCKET}/training-data/", ["read"], "1h", WHY)
    assert created.request.approvals_required == 2
    first = await flow.approve(created.request.id, people["carol"])
    assert first.grant is None and first.request.status is RequestStatus.PENDING
    with pytest.raises(Conflict) as exc:
        await flow.approve(created.request.id, people["carol"], "again")
    assert exc.value.code == "already_approved"
    after = await flow.requests.get_request(created.request.id)
    assert after is not None and [a.approver for a in after.approvals] == ["carol"]
    second = await flow.approve(created.request.id, people["erin"])
    assert second.grant is not None and second.request.status is RequestStatus.APPROVED
    assert [a.approver for a in second.request.approvals] == ["carol", "erin"]
    assert kinds(events).count("approval_recorded") == 2
    assert kinds(events).count("grant_created") == 1


async def test_deny_and_cancel_close_a_request_for_good(
    flow: Workflow, people: dict[str, Principal], events: list[Any]
) -> None:
    one = await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], None, WHY)
    denied = await flow.deny(one.request.id, people["carol"], "use the public weights")
    assert denied.status is RequestStatus.DENIED and denied.decision_comment == "use the public weights"
    with pytest.raises(Conflict):
        await flow.approve(one.request.id, people["dave"])
    two = await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], None, WHY)
    with pytest.raises(Forbidden):
        await flow.cancel(two.request.id, people["carol"])
    cancelled = await flow.cancel(two.request.id, people["alice"], "not needed any more")
    assert cancelled.status is RequestStatus.CANCELLED
    decisions = [(e.actor, e.decision) for e in events if isinstance(e, RequestDecided)]
    assert decisions == [("carol", "denied"), ("alice", "cancelled")]


async def test_policy_refusals_store_nothing(flow: Workflow, people: dict[str, Principal]) -> None:
    cases = [
        (dict(duration="9h"), "duration_too_long"),
        (dict(justification=""), "justification_missing"),
        (dict(resource=f"s3://{BUCKET}/secrets/"), "unknown_resource"),
        (dict(actions=["write"]), "action_not_requestable"),
        (dict(duration="two hours"), "invalid_duration"),
        (dict(resource="archive/models"), "invalid_resource"),
    ]
    for changes, expected in cases:
        args = {
            "resource": f"s3://{BUCKET}/models/",
            "actions": ["read"],
            "duration": "1h",
            "justification": WHY,
        }
        args.update(changes)
        with pytest.raises(Invalid) as exc:
            await flow.request_access(people["alice"], **args)  # type: ignore[arg-type]
        assert exc.value.code == expected
    assert await flow.requests.list_requests() == []


async def test_a_resource_name_with_one_path_can_be_requested_by_name(
    flow: Workflow, people: dict[str, Principal]
) -> None:
    outcome = await flow.request_access(people["bob"], "models", "read,list", None, WHY)
    assert outcome.request.resource == f"s3://{BUCKET}/models/"
    assert outcome.request.duration == timedelta(hours=2)  # the rule's default
    bare = await flow.request_access(people["bob"], f"s3://{BUCKET}/models", "read", None, WHY)
    assert bare.request.prefix == "models/"  # not the wider bare prefix, which would open models-old/


async def test_request_for_what_is_already_granted_says_so(
    flow: Workflow, people: dict[str, Principal]
) -> None:
    first = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read", "list"], "1h", WHY)
    again = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/llama/", ["read"], "8h", WHY)
    assert [g.id for g in again.already_granted] == [first.request.grant_id]
    assert first.request.grant_id in again.message and "already" in again.message
    # Extending is a new request: it made a second grant, the first is untouched.
    assert again.grant is not None and again.grant.id != first.request.grant_id


async def test_overlapping_grants_never_shorten_each_other_and_revoking_one_keeps_the_other(
    flow: Workflow, people: dict[str, Principal], clock: Clock, events: list[Any]
) -> None:
    long = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "8h", WHY)
    clock.advance(hours=1)
    short = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
    assert long.grant is not None and short.grant is not None
    assert long.grant.expires_at == T0 + timedelta(hours=8)  # not cut to the newer, shorter grant
    target = [Target(Action.READ, BUCKET, "models/w.gguf")]

    async def decide_at(moment: datetime) -> Any:
        snapshot = await flow.store.snapshot(moment)
        return GrantIndex.build(snapshot.grants).decide("bob", target, moment)

    await flow.revoke(long.grant.id, people["bob"], "done early")
    allowed = await decide_at(clock.now + timedelta(minutes=1))
    assert allowed.grant_ids == (short.grant.id,)
    assert not hasattr(await decide_at(clock.now + timedelta(hours=2)), "grant_ids")  # short one ended
    revoked = [e for e in events if isinstance(e, GrantRevoked)]
    assert [(e.grant.id, e.actor, e.reason) for e in revoked] == [(long.grant.id, "bob", "done early")]


async def test_revocation_rights_and_idempotence(
    flow: Workflow, people: dict[str, Principal], events: list[Any]
) -> None:
    outcome = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
    assert outcome.grant is not None
    with pytest.raises(Forbidden, match="is not yours") as refused:  # it exists; it is not alice's
        await flow.revoke(outcome.grant.id, people["alice"])
    assert refused.value.code == "not_yours"
    revoked = await flow.revoke(outcome.grant.id, people["carol"], "incident 42")
    assert revoked.revoked_at == T0 and revoked.extra["revoked_by"] == "carol"
    again = await flow.revoke(outcome.grant.id, people["root"], "again")
    assert again.extra["revoked_by"] == "carol"
    assert kinds(events).count("grant_revoked") == 1
    with pytest.raises(NotFound):
        await flow.revoke("g_missing", people["root"])


async def test_lists_show_each_person_what_they_may_see(flow: Workflow, people: dict[str, Principal]) -> None:
    mine = await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], None, WHY)
    data = await flow.request_access(people["alice"], f"s3://{BUCKET}/training-data/", ["read"], None, WHY)
    infra = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], None, WHY)

    async def ids(who: str, **kw: Any) -> set[str]:
        return {r.id for r in await flow.list_requests(people[who], **kw)}

    assert await ids("alice") == {mine.request.id, data.request.id}
    assert await ids("carol") == {mine.request.id, data.request.id, infra.request.id}
    assert await ids("erin") == {data.request.id}
    assert await ids("bob") == {infra.request.id}
    assert await ids("root") == {mine.request.id, data.request.id, infra.request.id}
    assert await ids("carol", status=RequestStatus.APPROVED) == {infra.request.id}
    assert {r.id for r in await flow.inbox(people["carol"])} == {mine.request.id, data.request.id}
    assert {r.id for r in await flow.inbox(people["alice"])} == set()
    with pytest.raises(NotFound):
        await flow.get_request(mine.request.id, people["bob"])
    grants = await flow.list_grants(people["alice"])
    assert grants == []
    assert [g.principal for g in await flow.list_grants(people["carol"], principal="bob")] == ["bob"]


# --- expiry, standing access, notices ---


async def test_pending_requests_expire_after_the_ttl(
    flow: Workflow, people: dict[str, Principal], clock: Clock, events: list[Any]
) -> None:
    created = await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], None, WHY)
    clock.advance(hours=23, minutes=59)
    assert (await flow.sweep()).expired_requests == ()
    clock.advance(minutes=1)
    # Too late to approve even before the sweep has run.
    with pytest.raises(Conflict):
        await flow.approve(created.request.id, people["carol"])
    swept = await flow.sweep()
    assert [r.id for r in swept.expired_requests] == [created.request.id]
    assert swept.expired_requests[0].status is RequestStatus.EXPIRED
    assert (await flow.sweep()).expired_requests == ()
    [expired] = [e for e in events if isinstance(e, RequestDecided)]
    assert (expired.actor, expired.decision) == ("system", "expired")


async def test_grants_warn_once_before_they_end_and_report_once_when_they_have(
    flow: Workflow, people: dict[str, Principal], clock: Clock, events: list[Any]
) -> None:
    outcome = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
    assert outcome.grant is not None
    clock.advance(minutes=30)
    assert (await flow.sweep()).expiring_grants == ()
    clock.advance(minutes=16)
    assert [g.id for g in (await flow.sweep()).expiring_grants] == [outcome.grant.id]
    assert (await flow.sweep()).expiring_grants == ()
    clock.advance(minutes=15)
    assert [g.id for g in (await flow.sweep()).expired_grants] == [outcome.grant.id]
    assert (await flow.sweep()).expired_grants == ()
    assert kinds([e for e in events if isinstance(e, GrantExpiring | GrantExpired)]) == [
        "grant_expiring",
        "grant_expired",
    ]


async def test_revoked_grants_are_not_reported_as_expired(
    flow: Workflow, people: dict[str, Principal], clock: Clock
) -> None:
    outcome = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
    assert outcome.grant is not None
    await flow.revoke(outcome.grant.id, people["bob"])
    clock.advance(hours=2)
    assert (await flow.sweep()).expired_grants == ()


async def test_standing_access_is_materialised_once_and_removed_with_the_policy(
    flow: Workflow, store: SqlStore, events: list[Any]
) -> None:
    created, revoked = await flow.sync_standing()
    assert [(g.principal, g.resource, g.expires_at, g.source) for g in created] == [
        ("inference", f"s3://{BUCKET}/models/", None, "standing")
    ]
    assert revoked == []
    assert await flow.sync_standing() == ([], [])  # a restart adds nothing
    assert [e.kind for e in events] == ["grant_created"]
    flow.policy = Policy(resources=POLICY.resources, rules=POLICY.rules)
    _, removed = await flow.sync_standing()
    assert [g.id for g in removed] == [created[0].id]
    assert await store.list_grants(principal="inference", active_at=T0) == []
    assert [e.kind for e in events] == ["grant_created", "grant_revoked"]


async def test_break_glass_is_instant_flagged_alerted_and_reviewed(
    flow: Workflow, people: dict[str, Principal], events: list[Any]
) -> None:
    outcome = await flow.request_access(
        people["alice"],
        f"s3://{BUCKET}/training-data/",
        ["read"],
        "1h",
        "prod incident 1234",
        break_glass=True,
    )
    assert outcome.request.status is RequestStatus.APPROVED and outcome.request.break_glass
    assert outcome.grant is not None and outcome.grant.source == "break-glass"
    assert outcome.request.needs_review
    [used] = [e for e in events if isinstance(e, BreakGlassUsed)]
    assert used.grant.id == outcome.grant.id and used.reason == "prod incident 1234"
    with pytest.raises(Forbidden):
        await flow.review(outcome.request.id, people["alice"], "fine")
    reviewed = await flow.review(outcome.request.id, people["erin"], "checked the incident ticket")
    assert reviewed.reviewed_by == "erin" and not reviewed.needs_review
    with pytest.raises(Conflict):
        await flow.review(outcome.request.id, people["carol"], "again")
    assert isinstance(events[-1], BreakGlassReviewed)


async def test_break_glass_without_a_reason_is_refused(flow: Workflow, people: dict[str, Principal]) -> None:
    with pytest.raises(Invalid) as exc:
        await flow.request_access(
            people["alice"], f"s3://{BUCKET}/training-data/", ["read"], "1h", "", break_glass=True
        )
    assert exc.value.code == "justification_missing"


# --- concurrency: several gateways share one database ---


async def _second_flow(store_url: str, clock: Clock, events: list[Any]) -> tuple[SqlStore, Workflow]:
    other = await SqlStore.open(store_url)
    bus = EventBus()
    bus.subscribe(events.append)
    return other, Workflow(other, POLICY, bus, clock=clock)


async def test_two_approvals_at_once_make_exactly_one_grant(
    flow: Workflow, people: dict[str, Principal], store_url: str, clock: Clock, events: list[Any]
) -> None:
    other_store, other = await _second_flow(store_url, clock, events)
    try:
        for _ in range(3):
            created = await flow.request_access(
                people["alice"], f"s3://{BUCKET}/models/", ["read"], None, WHY
            )
            results = await asyncio.gather(
                flow.approve(created.request.id, people["carol"]),
                other.approve(created.request.id, people["dave"]),
                return_exceptions=True,
            )
            granted = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, BaseException)]
            assert len(granted) == 1 and granted[0].grant is not None
            assert len(refused) == 1 and isinstance(refused[0], Conflict)
            grants = [g for g in await flow.store.list_grants() if g.request_id == created.request.id]
            assert len(grants) == 1
    finally:
        await other_store.close()
    assert kinds(events).count("grant_created") == 3


async def test_the_last_two_of_n_approvals_at_once_both_count_and_grant_once(
    flow: Workflow, people: dict[str, Principal], store_url: str, clock: Clock, events: list[Any]
) -> None:
    other_store, other = await _second_flow(store_url, clock, events)
    try:
        created = await flow.request_access(
            people["alice"], f"s3://{BUCKET}/training-data/", ["read"], None, WHY
        )
        results = await asyncio.gather(
            flow.approve(created.request.id, people["carol"]),
            other.approve(created.request.id, people["erin"]),
        )
        assert sum(r.grant is not None for r in results) == 1
        final = await flow.requests.get_request(created.request.id)
        assert final is not None and final.status is RequestStatus.APPROVED
        assert {a.approver for a in final.approvals} == {"carol", "erin"}
    finally:
        await other_store.close()


async def test_concurrent_sweeps_report_each_expiry_once(
    flow: Workflow, people: dict[str, Principal], store_url: str, clock: Clock, events: list[Any]
) -> None:
    other_store, other = await _second_flow(store_url, clock, events)
    try:
        for _ in range(4):
            await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], None, WHY)
        clock.advance(days=2)
        first, second = await asyncio.gather(flow.sweep(), other.sweep())
        assert len(first.expired_requests) + len(second.expired_requests) == 4
        standing = await asyncio.gather(flow.sync_standing(), other.sync_standing())
        assert sum(len(created) for created, _ in standing) == 1
    finally:
        await other_store.close()
    assert [e.decision for e in events if isinstance(e, RequestDecided)] == ["expired"] * 4


# --- API tokens ---


async def test_api_tokens_authenticate_until_revoked_and_only_a_hash_is_stored(
    flow: Workflow, people: dict[str, Principal], store: SqlStore
) -> None:
    token, secret = await flow.requests.create_token("alice", now=T0, description="laptop")
    who = await flow.authenticate_token(secret)
    assert who == people["alice"]
    assert await flow.authenticate_token(secret[:-2] + "xx") is None
    assert await flow.authenticate_token("Bearer nonsense") is None
    async with store.engine.connect() as conn:
        stored = (await conn.execute(select(api_tokens))).one()
    assert secret not in str(tuple(stored)) and secret.split("_")[-1] not in str(tuple(stored))
    # Groups are read at each call: a change applies to the next API request.
    await store.ensure_principal("alice", ["ml", "security"])
    assert (await flow.authenticate_token(secret)).groups == {"ml", "security"}  # type: ignore[union-attr]
    assert await flow.requests.revoke_token(token.id, now=T0)
    assert await flow.authenticate_token(secret) is None
    assert not await flow.requests.revoke_token("0000000000000000", now=T0)


async def test_tokens_need_an_existing_principal(flow: Workflow) -> None:
    from proxy.store.engine import StoreError

    with pytest.raises(StoreError, match="unknown principal"):
        await flow.requests.create_token("nobody", now=T0)


async def test_approval_event_carries_actor_and_comment(
    flow: Workflow, people: dict[str, Principal], events: list[Any]
) -> None:
    created = await flow.request_access(people["alice"], f"s3://{BUCKET}/training-data/", ["read"], None, WHY)
    await flow.approve(created.request.id, people["carol"], "looks right")
    [recorded] = [e for e in events if isinstance(e, ApprovalRecorded)]
    data = recorded.as_dict()
    assert (
        data["kind"] == "approval_recorded" and data["actor"] == "carol" and data["reason"] == "looks right"
    )
    assert data["approvals"] == ["carol"] and data["status"] == "pending"
    [made] = [e for e in events if isinstance(e, RequestCreated)]
    assert made.as_dict()["justification"] == WHY
    assert not any(isinstance(e, GrantCreated) for e in events)


# --- scheduled windows, and read-your-writes ---


async def test_a_scheduled_request_approved_ahead_starts_and_ends_with_its_window(
    flow: Workflow, people: dict[str, Principal], clock: Clock
) -> None:
    start = T0 + timedelta(hours=5)
    created = await flow.request_access(
        people["alice"], f"s3://{BUCKET}/models/", ["read"], "2h", WHY, starts_at=start
    )
    assert created.request.starts_at == start
    clock.advance(hours=1)
    approved = await flow.approve(created.request.id, people["carol"])
    assert approved.grant is not None
    assert (approved.grant.starts_at, approved.grant.expires_at) == (start, start + timedelta(hours=2))
    assert "scheduled" in approved.message
    assert not approved.grant.is_active(clock.now) and approved.grant.is_active(start)


async def test_a_scheduled_request_cannot_be_approved_once_its_window_has_ended(
    flow: Workflow, people: dict[str, Principal], clock: Clock
) -> None:
    start = T0 + timedelta(hours=1)
    created = await flow.request_access(
        people["alice"], f"s3://{BUCKET}/models/", ["read"], "2h", WHY, starts_at=start
    )
    clock.advance(hours=3)
    with pytest.raises(Conflict, match="window"):
        await flow.approve(created.request.id, people["carol"])


async def test_the_workflow_settles_each_grant_change_before_it_answers(
    store: SqlStore, clock: Clock, people: dict[str, Principal]
) -> None:
    settled: list[int] = []

    async def settle() -> None:
        settled.append(await store.version())

    flow = Workflow(store, POLICY, EventBus(), clock=clock, settle=settle)
    instant = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
    assert settled == [await store.version()]
    pending = await flow.request_access(people["alice"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
    assert len(settled) == 1  # nothing granted yet: nothing to settle
    await flow.approve(pending.request.id, people["carol"])
    assert instant.grant is not None
    await flow.revoke(instant.grant.id, people["bob"])
    assert len(settled) == 3 and settled[-1] == await store.version()


# --- bundles ---


async def test_bundle_grants_are_made_together_or_not_at_all(
    flow: Workflow, people: dict[str, Principal], events: list[Any], store: SqlStore, monkeypatch: Any
) -> None:
    from proxy.store import workflow as workflow_store
    from proxy.workflow.bundles import request_bundle

    wanted = [f"s3://{BUCKET}/models/", f"s3://{BUCKET}/training-data/"]
    outcome = await request_bundle(flow, people["alice"], wanted, ["read"], "1h", WHY)
    rid = outcome.request.id
    await flow.approve(rid, people["carol"])
    # The second grant's insert fails (a duplicate id): the first must not survive it.
    monkeypatch.setattr(workflow_store, "new_grant_id", lambda: "g_same")
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await flow.approve(rid, people["dave"])
    assert await store.list_grants(principal="alice") == []
    assert (await flow.get_request(rid, people["alice"])).status is RequestStatus.PENDING

    monkeypatch.undo()
    done = await flow.approve(rid, people["dave"])
    grants = {g.id: g.resource for g in await store.list_grants(principal="alice")}
    assert [grants[g] for g in done.request.grant_ids] == wanted
    assert kinds(events).count("grant_created") == 2


async def test_budgeted_resources_are_never_bundled_and_extensions_get_the_rules_budget(
    store: SqlStore, clock: Clock, people: dict[str, Principal]
) -> None:
    from dataclasses import replace as changed

    from proxy.access.budgets import Budget
    from proxy.workflow.bundles import request_bundle

    budget = Budget(max_bytes=1024)
    policy = changed(POLICY, rules=(changed(MODELS_RULE, budget=budget), *POLICY.rules[1:]))
    flow = Workflow(store, policy, EventBus(), clock=clock)
    wanted = [f"s3://{BUCKET}/models/", f"s3://{BUCKET}/training-data/"]
    with pytest.raises(Invalid) as refused:
        await request_bundle(flow, people["alice"], wanted, ["read"], "1h", WHY)
    assert refused.value.code == "budgeted_resource"

    granted = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "1h", WHY)
    assert granted.grant is not None and granted.grant.budget == budget
    extended = await extend_grant(flow, granted.grant.id, people["bob"], "1h", WHY)
    assert extended.grant is not None and extended.grant.budget == budget


# --- the hold on a suspended principal ---


async def test_a_suspended_principal_is_granted_nothing_at_once_until_an_approver_reconfirms(
    flow: Workflow, people: dict[str, Principal], store: SqlStore, clock: Clock, events: list[Any]
) -> None:
    """Regression: bob (instant for models) was suspended by an anomaly rule, asked again and was back in."""
    models = f"s3://{BUCKET}/models/"
    first = await flow.request_access(people["bob"], models, ["read"], "1h", WHY)
    assert first.grant is not None
    suspensions = GrantSuspensions(store)
    clock.advance(minutes=1)
    await suspensions.suspend_principal("bob", reason="anomaly decoy_touched: bait", now=clock())
    with pytest.raises(Forbidden) as refused:
        await flow.request_access(people["bob"], models, ["read"], "1h", WHY)
    assert refused.value.code == "on_hold" and "bait" not in refused.value.message
    assert [g.id for g in await store.list_grants(principal="bob", active_at=clock())] == []
    # Each way of asking again is a signal to the security team, saying how it was asked.
    for via in (Via.WEB, Via.SLACK):
        with pytest.raises(Forbidden):
            await flow.request_access(people["bob"], models, ["read"], "1h", WHY, via=via)
    with pytest.raises(Forbidden):
        await extend_grant(flow, first.grant.id, people["bob"], "1h", WHY, via=Via.SLACK)
    alerts = [e for e in events if isinstance(e, AnomalyAlert)]
    assert [a.details["via"] for a in alerts] == ["api", "web", "slack", "slack"]
    assert {(a.kind, a.principal, a.severity) for a in alerts} == {
        ("held_principal_asked", "bob", "critical")
    }
    assert all("bait" not in a.message and a.details["resources"] == [models] for a in alerts)
    # Nobody else is held: alice's request goes to the approvers as ever.
    pending = await flow.request_access(people["alice"], models, ["read"], "1h", WHY)
    assert pending.request.status is RequestStatus.PENDING

    assert await suspensions.lift_suspension(first.grant.id, actor="carol", now=clock())
    again = await flow.request_access(people["bob"], models, ["read"], "1h", WHY)
    assert again.request.status is RequestStatus.APPROVED and again.grant is not None
