"""Protected resources in the pure policy: overwrites and deletes there need two distinct approvals,
whatever the rule says (instant groups, no approvals, break-glass); other actions are as the rule says."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from proxy.access.decide import PROTECTED, Allow, Deny, authorize, within_protection
from proxy.access.grants import Action, Grant, Overwrite, Scope, Target
from proxy.access.policy import (
    Ask,
    Instant,
    NeedsApproval,
    Policy,
    Rejected,
    Resource,
    ResourcePath,
    Rule,
    approvals_needed,
    evaluate,
)
from proxy.identity.principals import Principal

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
alice = Principal("alice", frozenset({"ml"}))
RELEASES = Resource("releases", (ResourcePath("b", "releases/"),), protected=True)
RULE = Rule(
    resource="releases",
    requester_groups=frozenset({"ml"}),
    actions=frozenset(Action),
    instant_groups=frozenset({"ml"}),
    approver_groups=frozenset({"security"}),
    approvals_required=1,
    break_glass=True,
)
POLICY = Policy(resources=(RELEASES, Resource("scratch", (ResourcePath("b", "scratch/"),))), rules=(RULE,))


def _ask(*actions: Action, break_glass: bool = False) -> Ask:
    return Ask(alice, "b", "releases/v3/", frozenset(actions), None, "retire v3 now", break_glass)


def test_delete_on_a_protected_resource_waits_for_two_approvals_even_for_an_instant_group() -> None:
    result = evaluate(POLICY, _ask(Action.DELETE))
    assert isinstance(result, NeedsApproval) and result.protected and result.approvals_required == 2


def test_reading_or_creating_on_a_protected_resource_is_as_the_rule_says() -> None:
    assert isinstance(evaluate(POLICY, _ask(Action.READ, Action.CREATE)), Instant)


def test_break_glass_cannot_overwrite_a_protected_resource() -> None:
    result = evaluate(POLICY, _ask(Action.WRITE, break_glass=True))
    assert isinstance(result, Rejected) and result.code == "protected_resource"


def test_a_rule_asking_for_three_approvals_keeps_three() -> None:
    assert approvals_needed(RELEASES, replace(RULE, approvals_required=3), frozenset({Action.DELETE})) == 3


def test_bucket_configuration_reaching_a_protected_path_is_protected() -> None:
    assert POLICY.protects(Target(Action.ADMIN, "b", "", Scope.PREFIX))
    assert POLICY.protects(Target(Action.DELETE, "b", "releases/v1.bin"))
    assert not POLICY.protects(Target(Action.DELETE, "b", "scratch/x"))


def _grant(approvals: int) -> Grant:
    return Grant(
        "g_1", "alice", "b", "releases/", frozenset({Action.WRITE, Action.DELETE}), NOW, approvals=approvals
    )


def test_one_approval_grant_may_create_but_not_delete_under_a_protected_resource() -> None:
    delete = [Target(Action.DELETE, "b", "releases/v1.bin")]
    one = authorize(delete, [_grant(1)], NOW)
    assert isinstance(within_protection(one, delete, POLICY.protects), Deny)
    assert within_protection(one, delete, POLICY.protects).reason == PROTECTED  # type: ignore[union-attr]
    put = [Target(Action.WRITE, "b", "releases/v2.bin", overwrite=Overwrite.GUARDABLE)]
    guarded = within_protection(authorize(put, [_grant(1)], NOW), put, POLICY.protects)
    assert isinstance(guarded, Allow) and guarded.create_only


def test_two_approval_grant_overwrites_and_deletes() -> None:
    targets = [
        Target(Action.DELETE, "b", "releases/v1.bin"),
        Target(Action.WRITE, "b", "releases/v2.bin", overwrite=Overwrite.GUARDABLE),
    ]
    decision = within_protection(authorize(targets, [_grant(2)], NOW), targets, POLICY.protects)
    assert isinstance(decision, Allow) and not decision.create_only
