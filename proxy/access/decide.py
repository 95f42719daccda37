"""The authorization decision: a pure function from (who, what, grants, now) to Allow or Deny."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from proxy.access.grants import Grant, Target


@dataclass(frozen=True, slots=True)
class Allow:
    grants: tuple[Grant, ...]  # the grant that covered each target, in target order

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.id for g in self.grants))


@dataclass(frozen=True, slots=True)
class Deny:
    reason: str  # machine-readable: "no_grant", "no_target", ...
    target: Target | None = None  # the first target nothing covered


Decision = Allow | Deny


def authorize(targets: Iterable[Target], grants: Iterable[Grant], now: datetime) -> Decision:
    """Allow only if every target is covered by an active grant; fail closed on an empty target list.

    Where several grants cover a target, the one that lasts longest is named, so audit attributes the
    access to the grant that would still allow it.
    """
    active = [g for g in grants if g.is_active(now)]
    chosen: list[Grant] = []
    targets = list(targets)
    if not targets:
        return Deny("no_target")
    for target in targets:
        covering = [g for g in active if g.covers(target)]
        if not covering:
            return Deny("no_grant", target)
        chosen.append(max(covering, key=lasting))
    return Allow(tuple(chosen))


def lasting(grant: Grant) -> tuple[int, float]:
    # Standing grants (no expiry) outlast any timed grant.
    if grant.expires_at is None:
        return (1, 0.0)
    return (0, grant.expires_at.timestamp())
