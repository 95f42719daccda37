"""The authorization decision: a pure function from (who, what, grants, now) to Allow or Deny."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from proxy.access.grants import Grant, Target


@dataclass(frozen=True, slots=True)
class Allow:
    grants: tuple[Grant, ...]  # the grant that covered each target, in target order

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


@dataclass(frozen=True, slots=True)
class Deny:
    reason: str  # one of the reasons above
    target: Target | None = None  # the first target nothing covered
    grant: Grant | None = None  # SOURCE_NETWORK, BUDGET_SPENT: the grant that may not be used


Decision = Allow | Deny


def within_networks(decision: Decision, usable: Callable[[Grant], bool]) -> Decision:
    """The decision once every chosen grant is checked against the caller's source network."""
    if isinstance(decision, Allow):
        for grant in decision.grants:
            if not usable(grant):
                return Deny(SOURCE_NETWORK, grant=grant)
    return decision


def authorize(targets: Iterable[Target], grants: Iterable[Grant], now: datetime) -> Decision:
    """Allow only if every target is covered by an active grant; fail closed on an empty target list.

    Where several grants cover a target, the one that lasts longest is named, so audit attributes the
    access to the grant that would still allow it (one without a budget first, so no budget is drawn
    down needlessly). A read under a grant whose byte budget is spent is denied as BUDGET_SPENT.
    """
    active = [g for g in grants if g.is_active(now)]
    chosen: list[Grant] = []
    targets = list(targets)
    if not targets:
        return Deny(NO_TARGET)
    for target in targets:
        covering = [g for g in active if g.covers_unspent(target)]
        if not covering:
            spent = next((g for g in active if g.covers(target)), None)
            return Deny(NO_GRANT, target) if spent is None else Deny(BUDGET_SPENT, target, spent)
        chosen.append(max(covering, key=preferred))
    return Allow(tuple(chosen))


def preferred(grant: Grant) -> tuple[bool, int, float]:
    # A grant without a budget is used before one whose budget would be drawn down.
    return (grant.budget is None, *lasting(grant))


def lasting(grant: Grant) -> tuple[int, float]:
    # Standing grants (no expiry) outlast any timed grant.
    if grant.expires_at is None:
        return (1, 0.0)
    return (0, grant.expires_at.timestamp())
