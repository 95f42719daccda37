"""Property: the grant index never allows a target that no active grant of the caller covers.

Random grants and targets against an oracle written from the rules, not from Grant.covers: the caller's
own grant, same bucket, active at `now` (not revoked, not expired), the action granted and the key
starting with the grant's prefix (bucket-scoped targets need any active grant on the bucket).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support.grant_strategies import BUCKETS, KEYS, NOW, PRINCIPALS, grants_strategy, targets_strategy

from proxy.access.decide import Allow, Deny, authorize
from proxy.access.grants import Grant, Scope, Target
from proxy.access.index import GrantIndex


def oracle_covers(grant: Grant, who: str, target: Target) -> bool:
    if grant.principal != who or grant.bucket != target.bucket:
        return False
    if grant.revoked_at is not None and grant.revoked_at <= NOW:
        return False
    if grant.expires_at is not None and grant.expires_at <= NOW:
        return False
    if target.scope is Scope.BUCKET:
        return True
    return target.action in grant.actions and target.key[: len(grant.prefix)] == grant.prefix


@settings(max_examples=600, deadline=None)
@given(grants_strategy, targets_strategy, st.sampled_from(PRINCIPALS))
def test_index_allows_exactly_what_some_active_grant_of_the_caller_covers(
    grants: list[Grant], targets: list[Target], who: str
) -> None:
    decision = GrantIndex.build(grants).decide(who, targets, NOW)
    covered = [any(oracle_covers(g, who, t) for g in grants) for t in targets]
    if isinstance(decision, Allow):
        assert targets and all(covered)
        # Each target is attributed to a grant that really covers it.
        assert len(decision.grants) == len(targets)
        assert all(oracle_covers(g, who, t) for g, t in zip(decision.grants, targets, strict=True))
    else:
        assert not targets or not all(covered)
        if targets:
            assert decision.target is not None
            assert not any(oracle_covers(g, who, decision.target) for g in grants)


@settings(max_examples=500, deadline=None)
@given(grants_strategy, targets_strategy, st.sampled_from(PRINCIPALS))
def test_index_decides_as_the_plain_decision_over_the_callers_grants(
    grants: list[Grant], targets: list[Target], who: str
) -> None:
    # The index's per-principal/per-bucket shortcut must never change the answer.
    indexed = GrantIndex.build(grants).decide(who, targets, NOW)
    plain = authorize(targets, [g for g in grants if g.principal == who], NOW)
    assert type(indexed) is type(plain)
    if isinstance(plain, Deny):
        assert isinstance(indexed, Deny)
        assert (indexed.reason, indexed.target) == (plain.reason, plain.target)


@given(grants_strategy, st.sampled_from(PRINCIPALS))
def test_no_target_is_never_an_allow(grants: list[Grant], who: str) -> None:
    assert isinstance(GrantIndex.build(grants).decide(who, [], NOW), Deny)


@settings(max_examples=400, deadline=None)
@given(grants_strategy, st.sampled_from(PRINCIPALS), st.sampled_from(BUCKETS), KEYS)
def test_a_directory_has_a_grant_below_it_exactly_when_an_active_grant_prefix_starts_with_it(
    grants: list[Grant], who: str, bucket: str, directory: str
) -> None:
    def active(g: Grant) -> bool:
        return (g.revoked_at is None or g.revoked_at > NOW) and (g.expires_at is None or g.expires_at > NOW)

    expected = any(
        g.principal == who and g.bucket == bucket and active(g) and g.prefix[: len(directory)] == directory
        for g in grants
    )
    assert GrantIndex.build(grants).has_grant_below(who, bucket, directory, NOW) is expected
