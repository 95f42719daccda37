"""Periodic reviews over a real store, on SQLite and PostgreSQL, with a clock the test moves by days:
which grants come up, reminders, confirm / revoke, missed reviews, and two gateways sweeping at once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from support.clock import T0, Clock

from proxy.access.events import GrantRevoked, ReviewDecided, ReviewDue
from proxy.access.grants import Action, Grant
from proxy.access.policy import Policy, Resource, ResourcePath, ReviewSchedule, Rule
from proxy.access.reviews import MISSED_REASON, ReviewStatus
from proxy.identity.principals import Principal
from proxy.observe.events import EventBus
from proxy.store.sql import SqlStore
from proxy.workflow.extend import extend_grant
from proxy.workflow.service import Conflict, Forbidden, Invalid, NotFound, Workflow

BUCKET = "archive"
EVERY, GRACE = timedelta(days=90), timedelta(days=7)

POLICY = Policy(
    resources=(
        Resource("models", (ResourcePath(BUCKET, "models/"),), review=ReviewSchedule(EVERY, GRACE)),
        Resource("scratch", (ResourcePath(BUCKET, "scratch/"),)),
    ),
    rules=(
        Rule(
            resource="models",
            requester_groups=frozenset({"infra"}),
            actions=frozenset({Action.READ}),
            max_duration=timedelta(days=200),
            instant_groups=frozenset({"infra"}),
            approver_groups=frozenset({"security"}),
            justification_required=False,
        ),
    ),
    admin_groups=frozenset({"admins"}),
)


def workflow(store: SqlStore, clock: Clock, events: list[Any], policy: Policy = POLICY) -> Workflow:
    bus = EventBus()
    bus.subscribe(events.append)
    return Workflow(store, policy, bus, clock=clock)


@pytest.fixture
async def flow(store: SqlStore, clock: Clock, events: list[Any]) -> Workflow:
    return workflow(store, clock, events)


@pytest.fixture
async def people(store: SqlStore) -> dict[str, Principal]:
    groups = {"alice": ["ml"], "bob": ["infra"], "carol": ["security"], "mallory": ["ml"], "root": ["admins"]}
    return {name: await store.ensure_principal(name, g, now=T0) for name, g in groups.items()}


async def standing(store: SqlStore, who: str, prefix: str = "models/") -> Grant:
    return await store.add_grant(who, BUCKET, prefix, frozenset({Action.READ}), now=T0, expires_at=None)


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_standing_access_is_due_after_the_period_reminded_then_revoked_when_missed(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock, events: list[Any]
) -> None:
    grant = await standing(store, "alice")
    clock.advance(days=89)
    assert (await flow.reviews.sweep()).opened == ()

    clock.advance(days=1)
    [review] = (await flow.reviews.sweep()).opened
    assert (review.grant_id, review.period_start, review.due_at) == (grant.id, T0, T0 + EVERY)
    assert review.deadline == T0 + EVERY + GRACE
    assert [(e.review.id, e.final, e.reviewers) for e in of(events, ReviewDue)] == [
        (review.id, False, ("security",))
    ]
    assert (await flow.reviews.sweep()).opened == ()  # one review per period

    clock.advance(days=6)  # the last reminder: a day before the grace period ends
    assert [r.id for r in (await flow.reviews.sweep()).reminded] == [review.id]
    assert (await flow.reviews.sweep()).reminded == ()

    clock.advance(days=1)
    assert [r.id for r in (await flow.reviews.sweep()).missed] == [review.id]
    revoked = await store.get_grant(grant.id)
    assert revoked is not None and revoked.revoked_at == clock.now
    assert revoked.extra["revoke_reason"] == MISSED_REASON
    assert [e.reason for e in of(events, GrantRevoked)] == [MISSED_REASON]
    assert [e.review.status for e in of(events, ReviewDecided)] == [ReviewStatus.MISSED]
    assert (await flow.reviews.sweep()).missed == ()


async def test_a_confirmation_restarts_the_period_and_a_revocation_ends_access(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock, events: list[Any]
) -> None:
    grant = await standing(store, "alice")
    clock.advance(days=91)
    [review] = (await flow.reviews.sweep()).opened
    clock.advance(days=2)
    confirmed = await flow.reviews.decide(review.id, people["carol"], "confirm", "still training")
    assert (confirmed.status, confirmed.decided_by, confirmed.comment) == (
        ReviewStatus.CONFIRMED,
        "carol",
        "still training",
    )
    clock.advance(days=89)
    assert (await flow.reviews.sweep()).opened == ()
    clock.advance(days=1)
    [following] = (await flow.reviews.sweep()).opened
    assert following.period_start == T0 + timedelta(days=93)

    revoked = await flow.reviews.decide(following.id, people["root"], "revoke", "left the team")
    assert revoked.status is ReviewStatus.REVOKED
    ended = await store.get_grant(grant.id)
    assert ended is not None and ended.revoked_at == clock.now
    assert ended.extra["revoke_reason"] == "revoked in review: left the team"
    assert [(e.actor, e.reason) for e in of(events, GrantRevoked)] == [
        ("root", "revoked in review: left the team")
    ]


async def test_who_may_decide(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock
) -> None:
    await standing(store, "carol")  # a reviewer's own access
    await standing(store, "alice", "models/alice/")
    clock.advance(days=90)
    opened = {r.principal: r for r in (await flow.reviews.sweep()).opened}

    with pytest.raises(Forbidden, match="nobody reviews their own access"):
        await flow.reviews.decide(opened["carol"].id, people["carol"], "confirm")
    with pytest.raises(NotFound):  # not hers, not a reviewer: not even visible
        await flow.reviews.decide(opened["alice"].id, people["mallory"], "confirm")
    with pytest.raises(Invalid):
        await flow.reviews.decide(opened["alice"].id, people["carol"], "later")
    assert [r.principal for r in await flow.reviews.list_reviews(people["alice"])] == ["alice"]
    assert {r.principal for r in await flow.reviews.list_reviews(people["carol"])} == {"alice", "carol"}
    assert await flow.reviews.list_reviews(people["mallory"]) == []

    clock.advance(days=7)  # the deadline passed, even before the sweep ran: too late to decide
    with pytest.raises(Conflict, match="not decided in time"):
        await flow.reviews.decide(opened["alice"].id, people["carol"], "confirm")


async def test_short_grants_and_unreviewed_resources_never_come_up(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock
) -> None:
    await store.add_grant(
        "alice", BUCKET, "models/", frozenset({Action.READ}), now=T0, expires_at=T0 + timedelta(hours=8)
    )
    await standing(store, "alice", "scratch/")
    clock.advance(days=365)
    swept = await flow.reviews.sweep()
    assert (swept.opened, swept.reminded, swept.missed) == ((), (), ())


async def test_access_kept_up_by_extensions_is_reviewed_from_when_it_began(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock
) -> None:
    first = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "100d", "")
    assert first.grant is not None
    clock.advance(days=90)
    [early] = (await flow.reviews.sweep()).opened
    assert early.grant_id == first.grant.id

    clock.advance(days=5)
    extended = await extend_grant(flow, first.grant.id, people["bob"], "50d")
    assert extended.grant is not None
    clock.advance(days=5, minutes=1)  # the first grant ended; its extension holds the access now
    [carried] = (await flow.reviews.sweep()).opened
    assert carried.grant_id == extended.grant.id
    assert (carried.period_start, carried.deadline) == (T0, early.deadline)  # no new grace for renewing
    [lapsed] = [r for r in await flow.reviews.list_reviews(people["carol"], status=None) if r.id == early.id]
    assert lapsed.status is ReviewStatus.LAPSED


async def test_two_gateways_sweeping_at_once_open_remind_and_revoke_each_review_once(
    flow: Workflow,
    store: SqlStore,
    store_url: str,
    people: dict[str, Principal],
    clock: Clock,
    events: list[Any],
) -> None:
    for i in range(8):
        await standing(store, "alice", f"models/{i}/")
    other_store = await SqlStore.open(store_url)
    try:
        other = workflow(other_store, clock, events)

        async def both() -> list[Any]:
            return list(await asyncio.gather(flow.reviews.sweep(), other.reviews.sweep()))

        clock.advance(days=90)
        assert sum(len(s.opened) for s in await both()) == 8
        clock.advance(days=6, hours=1)
        assert sum(len(s.reminded) for s in await both()) == 8
        clock.advance(days=1)
        assert sum(len(s.missed) for s in await both()) == 8
        assert sum(len(s.missed) + len(s.opened) for s in await both()) == 0
    finally:
        await other_store.close()
    assert len([e for e in of(events, ReviewDue) if not e.final]) == 8
    assert len([e for e in of(events, ReviewDue) if e.final]) == 8
    assert len(of(events, GrantRevoked)) == 8 and len(of(events, ReviewDecided)) == 8
    assert len({e.grant.id for e in of(events, GrantRevoked)}) == 8


async def test_reviews_of_a_resource_no_longer_reviewed_lapse_instead_of_revoking(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock, events: list[Any]
) -> None:
    grant = await standing(store, "alice")
    clock.advance(days=90)
    [review] = (await flow.reviews.sweep()).opened
    models = POLICY.resource("models")
    assert models is not None
    flow.policy = replace(POLICY, resources=(replace(models, review=None), *POLICY.resources[1:]))
    clock.advance(days=8)
    assert (await flow.reviews.sweep()).missed == ()
    kept = await store.get_grant(grant.id)
    assert kept is not None and kept.revoked_at is None
    [lapsed] = await flow.reviews.list_reviews(people["carol"], status=ReviewStatus.LAPSED)
    assert lapsed.id == review.id and not of(events, GrantRevoked)


async def test_a_review_opened_late_still_gives_the_whole_grace_period(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock
) -> None:
    await standing(store, "alice")
    clock.advance(days=365)  # e.g. reviews turned on for access held long before
    [review] = (await flow.reviews.sweep()).opened
    assert review.due_at == T0 + EVERY and review.deadline == clock.now + GRACE
    clock.advance(days=6, hours=23)
    assert (await flow.reviews.sweep()).missed == ()


async def test_revoking_in_a_review_also_ends_the_extensions_already_approved(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock, events: list[Any]
) -> None:
    first = await flow.request_access(people["bob"], f"s3://{BUCKET}/models/", ["read"], "100d", "")
    assert first.grant is not None
    clock.advance(days=90)
    [review] = (await flow.reviews.sweep()).opened
    extended = await extend_grant(flow, first.grant.id, people["bob"], "50d")
    assert extended.grant is not None and extended.grant.starts_at == first.grant.expires_at

    await flow.reviews.decide(review.id, people["carol"], "revoke", "project over")
    for grant_id in (first.grant.id, extended.grant.id):
        ended = await store.get_grant(grant_id)
        assert ended is not None and ended.revoked_at == clock.now, grant_id
    assert {e.grant.id for e in of(events, GrantRevoked)} == {first.grant.id, extended.grant.id}


async def test_a_review_that_lapsed_opens_again_when_the_resource_is_reviewed_again(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock
) -> None:
    await standing(store, "alice")
    clock.advance(days=90)
    [review] = (await flow.reviews.sweep()).opened
    models = POLICY.resource("models")
    assert models is not None
    flow.policy = replace(POLICY, resources=(replace(models, review=None), *POLICY.resources[1:]))
    await flow.reviews.sweep()
    flow.policy = POLICY
    clock.advance(days=1)
    [again] = (await flow.reviews.sweep()).opened
    assert again.id == review.id and again.status is ReviewStatus.OPEN
    assert again.deadline == clock.now + GRACE
    assert (await flow.reviews.sweep()).opened == ()


async def test_daily_re_requests_add_up_to_long_held_access_but_a_longer_break_starts_over(
    flow: Workflow, store: SqlStore, people: dict[str, Principal], clock: Clock
) -> None:
    def day(n: int) -> datetime:
        return T0 + timedelta(days=n)

    async def eight_hours(start: datetime) -> Grant:
        return await store.add_grant(
            "alice",
            BUCKET,
            "models/",
            frozenset({Action.READ}),
            now=start,
            expires_at=start + timedelta(hours=8),
        )

    for n in range(90):
        await eight_hours(day(n))  # every working day, a fresh grant: 16 hours apart
    latest = await eight_hours(day(90))
    clock.now = day(90) + timedelta(hours=1)
    [review] = (await flow.reviews.sweep()).opened
    assert (review.grant_id, review.period_start) == (latest.id, T0)
    use = await flow.reviews.usage(review)
    assert len(use.grants) == 91

    # Someone else with the same habit, back after a two-day break: only the access since then counts.
    for n in range(88):
        await store.add_grant(
            "bob",
            BUCKET,
            "models/",
            frozenset({Action.READ}),
            now=day(n),
            expires_at=day(n) + timedelta(hours=8),
        )
    await store.add_grant("bob", BUCKET, "models/", frozenset({Action.READ}), now=day(90), expires_at=None)
    clock.now = day(92)
    assert (await flow.reviews.sweep()).opened == ()
