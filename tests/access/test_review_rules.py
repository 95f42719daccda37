"""Periodic reviews' pure rules: when a grant is due, when the last reminder goes, who decides, and the
`review_*` settings of a resource."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from proxy.access import review_rules as rules
from proxy.access.grants import Action, Grant
from proxy.access.policy import Policy, Resource, ResourcePath, ReviewSchedule, Rule
from proxy.access.policy_config import PolicySettings
from proxy.access.reviews import AccessReview, Decision, ReviewStatus, parse_decision
from proxy.identity.principals import Principal

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
EVERY, GRACE = timedelta(days=90), timedelta(days=7)
_IDS = itertools.count()
MODELS = Resource("models", (ResourcePath("b", "models/"),), review=ReviewSchedule(EVERY, GRACE))
POLICY = Policy(
    resources=(MODELS, Resource("scratch", (ResourcePath("b", "scratch/"),))),
    rules=(Rule("models", approver_groups=frozenset({"security"})),),
    admin_groups=frozenset({"admins"}),
)


def grant(prefix: str = "models/x/", **fields: object) -> Grant:
    values: dict[str, object] = {"id": f"g_{next(_IDS)}", "created_at": T0, **fields}
    return Grant(principal="alice", bucket="b", prefix=prefix, actions=frozenset({Action.READ}), **values)  # type: ignore[arg-type]


def review(**fields: object) -> AccessReview:
    values: dict[str, object] = {
        "id": "v_1",
        "grant_id": "g_1",
        "principal": "alice",
        "resource_name": "models",
        "bucket": "b",
        "prefix": "models/x/",
        "period_start": T0,
        "due_at": T0 + EVERY,
        "deadline": T0 + EVERY + GRACE,
        "remind_at": T0 + EVERY + GRACE - timedelta(days=1),
        "created_at": T0 + EVERY,
        **fields,
    }
    return AccessReview(**values)  # type: ignore[arg-type]


def test_a_grant_is_due_once_held_for_the_period_from_its_anchor() -> None:
    assert rules.due(POLICY, grant(), T0, T0 + EVERY - timedelta(seconds=1)) is None
    due = rules.due(POLICY, grant(), T0, T0 + EVERY)
    assert due is not None and (due.due_at, due.deadline) == (T0 + EVERY, T0 + EVERY + GRACE)
    assert due.remind_at == T0 + EVERY + GRACE - timedelta(days=1)
    # Outside a reviewed resource, or no longer in force: never.
    assert rules.due(POLICY, grant("scratch/"), T0, T0 + 2 * EVERY) is None
    assert rules.due(POLICY, grant(revoked_at=T0 + EVERY), T0, T0 + 2 * EVERY) is None
    assert rules.period_anchor(T0, [T0 + timedelta(days=3), T0 + timedelta(days=1)]) == T0 + timedelta(days=3)
    assert rules.period_anchor(T0, []) == T0
    # Opened late: the whole grace period from now; carried on by an extension: the earlier deadline.
    late = rules.due(POLICY, grant(), T0, T0 + 2 * EVERY)
    assert late is not None and late.deadline == T0 + 2 * EVERY + GRACE
    carried = rules.due(POLICY, grant(), T0, T0 + 2 * EVERY, T0 + EVERY + GRACE)
    assert carried is not None and carried.deadline == T0 + EVERY + GRACE


def test_access_is_held_on_through_grants_resuming_within_the_gap() -> None:
    day = timedelta(days=1)
    current = grant(created_at=T0 + 10 * day, expires_at=T0 + 11 * day)
    run = rules.held_run(
        current,
        [
            grant(created_at=T0 + 9 * day, expires_at=T0 + 9 * day + timedelta(hours=8)),  # 16 h before
            grant(created_at=T0 + 8 * day, expires_at=T0 + 9 * day + timedelta(hours=1)),  # overlaps
            grant(created_at=T0 + 2 * day, expires_at=T0 + 3 * day),  # five days before: a break
            grant(created_at=T0 + 20 * day, expires_at=None),  # later: not part of it
        ],
        day,
    )
    assert [g.created_at for g in run] == [T0 + 10 * day, T0 + 9 * day, T0 + 8 * day]
    assert rules.run_start(run) == T0 + 8 * day


def test_the_last_reminder_is_a_day_before_the_end_or_half_way_through_a_short_grace() -> None:
    deadline = T0 + timedelta(days=7)
    assert rules.remind_at(deadline, timedelta(days=7)) == deadline - timedelta(days=1)
    assert rules.remind_at(deadline, timedelta(hours=10)) == deadline - timedelta(hours=5)


def test_only_revoked_or_expired_grants_have_ended() -> None:
    now = T0 + timedelta(days=1)
    assert not rules.ended(grant(), now)
    assert rules.ended(grant(revoked_at=now), now)
    assert rules.ended(grant(expires_at=now), now)
    assert not rules.ended(grant(expires_at=now + timedelta(seconds=1)), now)


def test_reviewers_decide_admins_too_never_the_holder_and_only_while_open() -> None:
    now = T0 + EVERY
    carol = Principal("carol", frozenset({"security"}))
    assert rules.check_decision(POLICY, review(), carol, now) is None
    assert rules.check_decision(POLICY, review(), Principal("root", frozenset({"admins"})), now) is None
    own = rules.check_decision(POLICY, review(principal="carol"), carol, now)
    assert own is not None and own.code == "self_review"
    outsider = rules.check_decision(POLICY, review(), Principal("mallory", frozenset({"ml"})), now)
    assert outsider is not None and outsider.code == "not_a_reviewer"
    decided = rules.check_decision(
        POLICY, review(status=ReviewStatus.CONFIRMED, decided_by="dave"), carol, now
    )
    assert decided is not None and decided.code == "already_decided" and "by dave" in decided.message
    late = rules.check_decision(POLICY, review(), carol, T0 + EVERY + GRACE)
    assert late is not None and late.code == "review_missed"
    assert rules.may_see(POLICY, review(), Principal("alice", frozenset()))
    assert not rules.may_see(POLICY, review(), Principal("mallory", frozenset({"ml"})))


def test_reviewers_default_to_the_resources_approvers() -> None:
    assert rules.reviewer_groups(POLICY, MODELS) == frozenset({"security"})
    named = Resource("m", MODELS.paths, review=ReviewSchedule(EVERY, GRACE, frozenset({"ml-leads"})))
    assert rules.reviewer_groups(POLICY, named) == frozenset({"ml-leads"})


def test_decisions_parse_from_what_people_type() -> None:
    assert parse_decision(" Confirm ") is Decision.CONFIRM
    assert parse_decision("revoke") is Decision.REVOKE
    assert parse_decision("approve") is None


def test_review_settings_load_and_are_checked_at_start() -> None:
    settings = {
        "resources": {
            "models": {"paths": ["s3://b/models/"], "review_every": "90d", "reviewers": ["ml-leads"]},
            "scratch": {"paths": ["s3://b/scratch/"]},
        }
    }
    built = PolicySettings.model_validate(settings).build()
    models, scratch = built.resource("models"), built.resource("scratch")
    assert models is not None and models.review == ReviewSchedule(EVERY, GRACE, frozenset({"ml-leads"}))
    assert scratch is not None and scratch.review is None
    with pytest.raises(ValidationError, match="invalid duration"):
        PolicySettings.model_validate({"resources": {"m": {"paths": ["s3://b/m/"], "review_every": "90"}}})
    with pytest.raises(ValidationError, match="nobody reviews"):
        PolicySettings.model_validate({"resources": {"m": {"paths": ["s3://b/m/"], "review_every": "90d"}}})
