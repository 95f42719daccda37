"""The access policy's pure decisions: evaluating requests, approvals, denials, revocation rights."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from proxy.access.grants import Action, Grant
from proxy.access.policy import (
    Approve,
    Ask,
    Instant,
    NeedsApproval,
    Policy,
    Rejected,
    Resource,
    ResourcePath,
    Rule,
    check_approval,
    check_cancel,
    check_denial,
    check_review,
    covering_grants,
    evaluate,
    may_revoke,
    may_view_request,
)
from proxy.access.requests import AccessRequest, Approval, RequestStatus
from proxy.identity.principals import Principal

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BUCKET = "archive"
READ = frozenset({Action.READ})

alice = Principal("alice", frozenset({"ml"}))
bob = Principal("bob", frozenset({"infra"}))
carol = Principal("carol", frozenset({"security"}))
dave = Principal("dave", frozenset({"security", "ml"}))
erin = Principal("erin", frozenset({"data-owners"}))
mallory = Principal("mallory", frozenset({"marketing"}))
root = Principal("root", frozenset({"admins"}))


def policy(**rule_changes: object) -> Policy:
    models_rule = Rule(
        resource="models",
        requester_groups=frozenset({"ml", "infra", "security"}),
        actions=frozenset({Action.READ, Action.LIST}),
        default_duration=timedelta(hours=2),
        max_duration=timedelta(hours=8),
        justification_required=True,
        justification_min_length=10,
        instant_groups=frozenset({"infra"}),
        approver_groups=frozenset({"security"}),
        approvals_required=1,
    )
    data_rule = Rule(
        resource="training-data",
        requester_groups=frozenset({"ml"}),
        actions=frozenset({Action.READ}),
        approver_groups=frozenset({"security", "data-owners"}),
        approvals_required=2,
        break_glass=True,
    )
    return Policy(
        resources=(
            Resource("models", (ResourcePath(BUCKET, "models/"),)),
            Resource("training-data", (ResourcePath(BUCKET, "training-data/"), ResourcePath("rlhf", ""))),
            Resource("llama", (ResourcePath(BUCKET, "models/llama/"),)),
        ),
        rules=(replace(models_rule, **rule_changes), data_rule),
        admin_groups=frozenset({"admins"}),
    )


def ask(who: Principal = alice, prefix: str = "models/", **changes: object) -> Ask:
    base = Ask(who, BUCKET, prefix, READ, timedelta(hours=2), "evaluate the new checkpoint")
    return replace(base, **changes)


def pending(
    requester: str = "alice",
    resource: str = "models",
    approvals: tuple[Approval, ...] = (),
    required: int = 1,
) -> AccessRequest:
    return AccessRequest(
        id="r_1",
        requester=requester,
        resource_name=resource,
        bucket=BUCKET,
        prefix="models/" if resource == "models" else "training-data/",
        actions=READ,
        duration=timedelta(hours=2),
        justification="evaluate the new checkpoint",
        status=RequestStatus.PENDING,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=24),
        approvals_required=required,
        approvals=approvals,
    )


def code(result: object) -> str:
    assert isinstance(result, Rejected), result
    return result.code


# --- evaluating a new request ---


def test_member_of_an_instant_group_is_granted_at_once() -> None:
    result = evaluate(policy(), ask(bob))
    assert isinstance(result, Instant)
    assert result.why == "instant_group"
    assert result.duration == timedelta(hours=2)


def test_others_need_the_rules_number_of_approvals() -> None:
    result = evaluate(policy(), ask(alice))
    assert isinstance(result, NeedsApproval)
    assert result.approvals_required == 1
    assert result.resource.name == "models"


def test_zero_approvals_required_grants_at_once_with_justification() -> None:
    result = evaluate(policy(approvals_required=0, approver_groups=frozenset()), ask(alice))
    assert isinstance(result, Instant) and result.why == "no_approval_required"


def test_duration_over_the_maximum_is_rejected_not_shortened() -> None:
    result = evaluate(policy(), ask(duration=timedelta(hours=8, seconds=1)))
    assert code(result) == "duration_too_long"
    assert "8h" in result.message  # type: ignore[union-attr]
    assert isinstance(evaluate(policy(), ask(duration=timedelta(hours=8))), NeedsApproval)


def test_no_duration_means_the_rules_default() -> None:
    result = evaluate(policy(default_duration=timedelta(minutes=45)), ask(duration=None))
    assert isinstance(result, NeedsApproval) and result.duration == timedelta(minutes=45)


def test_missing_justification_is_rejected_when_required() -> None:
    assert code(evaluate(policy(), ask(justification="   "))) == "justification_missing"


def test_short_justification_is_rejected_below_the_minimum_length() -> None:
    assert code(evaluate(policy(), ask(justification="because"))) == "justification_too_short"
    assert isinstance(
        evaluate(policy(justification_min_length=7), ask(justification="because")), NeedsApproval
    )


def test_justification_can_be_optional() -> None:
    result = evaluate(policy(justification_required=False), ask(justification=""))
    assert isinstance(result, NeedsApproval)


def test_instant_group_still_needs_a_justification_when_required() -> None:
    assert code(evaluate(policy(), ask(bob, justification=""))) == "justification_missing"


def test_principal_outside_the_requester_groups_may_not_request() -> None:
    result = evaluate(policy(), ask(mallory))
    assert code(result) == "not_a_requester"
    assert "ml" in result.message  # type: ignore[union-attr]


def test_star_lets_anyone_request() -> None:
    assert isinstance(evaluate(policy(requester_groups=frozenset({"*"})), ask(mallory)), NeedsApproval)


def test_action_the_rule_does_not_offer_is_rejected() -> None:
    result = evaluate(policy(), ask(actions=frozenset({Action.READ, Action.WRITE})))
    assert code(result) == "action_not_requestable"
    assert "list, read" in result.message  # type: ignore[union-attr]


def test_path_outside_every_resource_is_rejected() -> None:
    assert code(evaluate(policy(), ask(prefix="secrets/"))) == "unknown_resource"
    # S3 prefix semantics: models-old/ is not inside models/.
    assert code(evaluate(policy(), ask(prefix="models-old/x"))) == "unknown_resource"


def test_narrower_prefix_inside_a_resource_is_requestable() -> None:
    result = evaluate(policy(), ask(prefix="models/mistral/7b/"))
    assert isinstance(result, NeedsApproval) and result.resource.name == "models"


def test_most_specific_resource_wins() -> None:
    # models/llama/ is its own resource with no rule: it cannot be requested through `models`.
    assert code(evaluate(policy(), ask(prefix="models/llama/70b/"))) == "not_requestable"


def test_first_admitting_rule_decides_in_config_order() -> None:
    base = policy()
    writers = Rule(
        resource="models",
        requester_groups=frozenset({"ml"}),
        actions=frozenset({Action.READ, Action.WRITE}),
        approver_groups=frozenset({"security"}),
        approvals_required=2,
    )
    p = replace(base, rules=(*base.rules, writers))
    assert isinstance(r := evaluate(p, ask(alice)), NeedsApproval) and r.approvals_required == 1
    write = evaluate(p, ask(alice, actions=frozenset({Action.WRITE})))
    assert isinstance(write, NeedsApproval) and write.approvals_required == 2


def test_break_glass_is_instant_where_allowed() -> None:
    result = evaluate(policy(), ask(alice, prefix="training-data/x", break_glass=True))
    assert isinstance(result, Instant) and result.why == "break_glass"


def test_break_glass_needs_a_reason_even_when_justification_is_optional() -> None:
    p = policy()
    relaxed = replace(p, rules=(p.rules[0], replace(p.rules[1], justification_required=False)))
    result = evaluate(relaxed, ask(alice, prefix="training-data/x", break_glass=True, justification=""))
    assert code(result) == "justification_missing"
    assert "break-glass" in result.message  # type: ignore[union-attr]


def test_break_glass_is_refused_where_the_rule_does_not_allow_it() -> None:
    assert code(evaluate(policy(), ask(alice, break_glass=True))) == "break_glass_not_allowed"


def test_break_glass_does_not_bypass_who_may_request() -> None:
    assert (
        code(evaluate(policy(), ask(mallory, prefix="training-data/", break_glass=True))) == "not_a_requester"
    )


# --- approvals ---


def test_nobody_approves_their_own_request() -> None:
    # dave is both a requester (ml) and an approver (security): still not for himself.
    result = check_approval(policy(), pending("dave"), dave, dave, NOW)
    assert code(result) == "self_approval"


def test_approver_outside_the_approver_groups_is_refused() -> None:
    result = check_approval(policy(), pending(), alice, bob, NOW)
    assert code(result) == "not_an_approver"
    assert "security" in result.message  # type: ignore[union-attr]


def test_admins_are_not_approvers_unless_in_an_approver_group() -> None:
    assert code(check_approval(policy(), pending(), alice, root, NOW)) == "not_an_approver"


def test_membership_is_judged_at_the_moment_of_approval() -> None:
    left_security = Principal("carol", frozenset({"ml"}))
    assert isinstance(check_approval(policy(), pending(), alice, carol, NOW), Approve)
    assert code(check_approval(policy(), pending(), alice, left_security, NOW)) == "not_an_approver"


def test_requester_who_left_the_team_can_no_longer_be_approved() -> None:
    moved = Principal("alice", frozenset({"marketing"}))
    assert code(check_approval(policy(), pending(), moved, carol, NOW)) == "not_a_requester"


def test_one_approval_completes_one_of_m() -> None:
    verdict = check_approval(policy(), pending(), alice, carol, NOW)
    assert isinstance(verdict, Approve) and verdict.complete


def test_n_of_m_counts_distinct_approvers() -> None:
    first = check_approval(policy(), pending(resource="training-data", required=2), alice, carol, NOW)
    assert isinstance(first, Approve) and not first.complete
    once = pending(resource="training-data", approvals=(Approval("carol", NOW),), required=2)
    again = check_approval(policy(), once, alice, carol, NOW)
    assert code(again) == "already_approved"
    second = check_approval(policy(), once, alice, erin, NOW)
    assert isinstance(second, Approve) and second.complete and second.approvals == 2


def test_decided_or_lapsed_requests_take_no_more_approvals() -> None:
    approved = replace(pending(), status=RequestStatus.APPROVED)
    assert code(check_approval(policy(), approved, alice, carol, NOW)) == "not_pending"
    lapsed = pending()
    assert code(check_approval(policy(), lapsed, alice, carol, lapsed.expires_at)) == "not_pending"


def test_approvals_follow_the_current_policy() -> None:
    stricter = policy(approvals_required=3, approver_groups=frozenset({"security"}))
    verdict = check_approval(stricter, pending(required=1), alice, carol, NOW)
    assert isinstance(verdict, Approve) and verdict.required == 3 and not verdict.complete


# --- denial, cancel, review, revocation, visibility ---


def test_approvers_and_admins_may_deny_but_not_others_or_the_requester() -> None:
    assert check_denial(policy(), pending(), carol, NOW) is None
    assert check_denial(policy(), pending(), root, NOW) is None
    assert code(check_denial(policy(), pending(), bob, NOW)) == "not_an_approver"
    assert code(check_denial(policy(), pending(), alice, NOW)) == "self_approval"


def test_only_the_requester_cancels() -> None:
    assert check_cancel(pending(), alice, NOW) is None
    assert code(check_cancel(pending(), carol, NOW)) == "not_allowed"


def test_break_glass_review_by_an_approver_once() -> None:
    glass = replace(pending(resource="training-data"), status=RequestStatus.APPROVED, break_glass=True)
    assert check_review(policy(), glass, carol) is None
    assert code(check_review(policy(), glass, alice)) == "self_approval"
    assert code(check_review(policy(), replace(glass, reviewed_at=NOW, reviewed_by="erin"), carol)) == (
        "already_reviewed"
    )
    assert code(check_review(policy(), pending(), carol)) == "not_break_glass"


def _grant(principal: str = "alice", prefix: str = "models/", **changes: object) -> Grant:
    base = Grant("g_1", principal, BUCKET, prefix, READ, NOW, NOW + timedelta(hours=2))
    return replace(base, **changes)


def test_holder_approver_or_admin_may_revoke() -> None:
    grant = _grant()
    assert may_revoke(policy(), grant, alice)
    assert may_revoke(policy(), grant, carol)
    assert may_revoke(policy(), grant, root)
    assert not may_revoke(policy(), grant, bob)
    # A grant outside every resource (made by an admin from the CLI): holder and admins only.
    stray = _grant(prefix="elsewhere/")
    assert may_revoke(policy(), stray, root) and not may_revoke(policy(), stray, carol)


def test_request_visibility() -> None:
    assert may_view_request(policy(), pending(), alice)
    assert may_view_request(policy(), pending(), carol)
    assert may_view_request(policy(), pending(), root)
    assert not may_view_request(policy(), pending(), bob)


def test_covering_grants_say_when_access_already_exists() -> None:
    wide = _grant(actions=frozenset({Action.READ, Action.LIST}))
    narrow = _grant(id="g_2", prefix="models/a/")
    found = covering_grants([wide, narrow], "alice", BUCKET, "models/b/", READ, NOW)
    assert found == (wide,)
    assert covering_grants([wide], "alice", BUCKET, "models/b/", frozenset({Action.WRITE}), NOW) == ()
    assert covering_grants([wide], "bob", BUCKET, "models/", READ, NOW) == ()
    assert covering_grants([replace(wide, revoked_at=NOW)], "alice", BUCKET, "models/", READ, NOW) == ()


def test_allowed_networks_only_lists_rules_with_networks() -> None:
    p = policy(source_cidrs=("10.0.0.0/8",))
    assert p.allowed_networks() == {"models": ["10.0.0.0/8"]}
    assert policy().allowed_networks() == {}


def test_a_missing_trailing_slash_reads_as_the_resources_own_prefix() -> None:
    p = policy()
    assert p.canonical_prefix(BUCKET, "models") == "models/"
    assert p.canonical_prefix(BUCKET, "models/x") == "models/x"
    assert p.canonical_prefix(BUCKET, "mod") == "mod"  # never widened to something else
    assert p.canonical_prefix("rlhf", "") == ""
    assert p.canonical_prefix("other", "models") == "models"
