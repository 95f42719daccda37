"""The authorization decision: a pure function from (who, what, grants, now) to Allow or Deny."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from proxy.access.grants import Action, Grant, Overwrite, Target


@dataclass(frozen=True, slots=True)
class Allow:
    grants: tuple[Grant, ...]  # the grant that covered each target, in target order
    # A write allowed only as long as it replaces nothing: the gateway sends it with If-None-Match: *.
    create_only: bool = False

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.id for g in self.grants))


# Why a request is denied, machine-readable (the audit event's `deny_reason`, a metrics label).
NO_TARGET = "no_target"  # nothing the gateway could authorize: an unsupported operation
NO_GRANT = "no_grant"
SOURCE_NETWORK = "source_network"  # a grant covers it, but not from the caller's network
# A HEAD on a "directory" the caller holds grants below: answered as S3 answers a missing key.
ABSENT = "absent"
# A grant covers it, but its byte budget is spent.
BUDGET_SPENT = "budget_spent"
# A `create` grant covers the key, but the write asked to replace an object (its own If-Match or
# If-None-Match).
CREATE_ONLY = "create_only"
# Overwriting or deleting under a protected resource with a grant fewer than two people approved.
PROTECTED = "protected"


@dataclass(frozen=True, slots=True)
class Deny:
    reason: str  # one of the reasons above
    target: Target | None = None  # the first target nothing covered
    # SOURCE_NETWORK, BUDGET_SPENT, CREATE_ONLY, PROTECTED: the grant that may not be used
    grant: Grant | None = None


Decision = Allow | Deny


def within_networks(decision: Decision, usable: Callable[[Grant], bool]) -> Decision:
    """The decision once every chosen grant is checked against the caller's source network."""
    if isinstance(decision, Allow):
        for grant in decision.grants:
            if not usable(grant):
                return Deny(SOURCE_NETWORK, grant=grant)
    return decision


def within_protection(
    decision: Decision, targets: Iterable[Target], protects: Callable[[Target], bool]
) -> Decision:
    """The decision once protected resources are honoured: under one, a grant fewer than two people
    approved may still create (its writes are guarded with If-None-Match: *) but neither overwrites
    nor deletes, whatever actions it names."""
    if not isinstance(decision, Allow):
        return decision
    create_only = decision.create_only
    for target, grant in zip(targets, decision.grants, strict=True):
        if grant.two_person or not protects(target):
            continue
        if target.overwrites:
            return Deny(PROTECTED, target, grant)
        create_only = create_only or target.overwrite is Overwrite.GUARDABLE
    return replace(decision, create_only=create_only) if create_only != decision.create_only else decision


def authorize(targets: Iterable[Target], grants: Iterable[Grant], now: datetime) -> Decision:
    """Allow only if every target is covered by an active grant; fail closed on an empty target list.

    Where several grants cover a target, one granting the action itself is named before a `create`
    grant, then one two people approved (see within_protection), then the one that lasts longest, so
    audit attributes the access to the grant that would still allow it (one without a budget first, so
    no budget is drawn down needlessly). A read under a grant whose byte budget is spent is denied as
    BUDGET_SPENT. A write allowed only by a `create` grant is allowed `create_only`.
    """
    active = [g for g in grants if g.is_active(now)]
    chosen: list[Grant] = []
    targets = list(targets)
    if not targets:
        return Deny(NO_TARGET)
    for target in targets:
        covering = [g for g in active if g.covers_unspent(target)]
        if not covering:
            return _uncovered(target, active)
        chosen.append(max(covering, key=lambda g: (target.action in g.actions, g.two_person, *preferred(g))))
    return Allow(tuple(chosen), create_only=any(map(_needs_guard, targets, chosen)))


def _uncovered(target: Target, active: list[Grant]) -> Deny:
    spent = next((g for g in active if g.covers(target)), None)
    if spent is not None:
        return Deny(BUDGET_SPENT, target, spent)
    if target.action is Action.WRITE:
        guarded = Target(target.action, target.bucket, target.key, target.scope, Overwrite.GUARDABLE)
        creator = next((g for g in active if g.covers(guarded)), None)
        if creator is not None:
            return Deny(CREATE_ONLY, target, creator)
    return Deny(NO_GRANT, target)


def _needs_guard(target: Target, grant: Grant) -> bool:
    return target.overwrite is Overwrite.GUARDABLE and target.action not in grant.actions


def preferred(grant: Grant) -> tuple[bool, int, float]:
    # A grant without a budget is used before one whose budget would be drawn down.
    return (grant.budget is None, *lasting(grant))


def lasting(grant: Grant) -> tuple[int, float]:
    # Standing grants (no expiry) outlast any timed grant.
    if grant.expires_at is None:
        return (1, 0.0)
    return (0, grant.expires_at.timestamp())
