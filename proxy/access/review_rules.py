"""Periodic access reviews (pure): which long-held grants are due for review, who may decide one, and
when a review left undecided is reminded about and then missed.

The rule for "held for long": a grant of a resource with `review_every` is due once its holder has held
access to that resource for that long since it began or since its last review decision. Access is held on
through a run of the holder's grants on the resource, each resuming within `review_gap` (default a day) of
the one before ending: standing access, extensions (which resume exactly where a grant ends) and daily
re-requests all add up; a one-hour grant now and then never comes up.
No clock reads: callers pass `now` and the grants and decisions to weigh.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from proxy.access.grants import Grant
from proxy.access.policy import Policy, Rejected, Resource
from proxy.access.reviews import AccessReview, ReviewStatus
from proxy.identity.principals import Principal

# The last reminder goes out this long before the grace period ends (or half-way through a shorter one).
FINAL_NOTICE = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DueReview:
    """A review the sweep should open now (its id is chosen by the store)."""

    grant: Grant
    resource: Resource
    period_start: datetime
    due_at: datetime
    deadline: datetime
    remind_at: datetime


def reviewer_groups(policy: Policy, resource: Resource) -> frozenset[str]:
    schedule = resource.review
    if schedule is not None and schedule.reviewer_groups:
        return schedule.reviewer_groups
    return frozenset(g for rule in policy.rules_for(resource.name) for g in rule.approver_groups)


def reviewed_resource(policy: Policy, grant: Grant) -> Resource | None:
    """The resource whose review schedule covers `grant`, if it has one."""
    matched = policy.match(grant.bucket, grant.prefix)
    if matched is None or matched[0].review is None:
        return None
    return matched[0]


def ended(grant: Grant, now: datetime) -> bool:
    """Over for good (revoked or expired), unlike a grant merely suspended or not yet started."""
    revoked = grant.revoked_at is not None and grant.revoked_at <= now
    return revoked or (grant.expires_at is not None and grant.expires_at <= now)


def remind_at(deadline: datetime, grace: timedelta) -> datetime:
    return deadline - min(FINAL_NOTICE, grace / 2)


def due(
    policy: Policy, grant: Grant, anchor: datetime, now: datetime, carried: datetime | None = None
) -> DueReview | None:
    """The review `grant` needs now, if access held since `anchor` reached its resource's period.

    The holder always gets the whole grace period from the moment the review opens (a review opened
    late, say when reviews are first turned on for old standing access, is announced before anything is
    revoked), except that access carried on by an extension keeps the deadline its earlier grant's review
    had (`carried`): renewing does not buy time."""
    resource = reviewed_resource(policy, grant)
    if resource is None or resource.review is None or not grant.is_active(now):
        return None
    schedule = resource.review
    due_at = anchor + schedule.every
    if due_at > now:
        return None
    deadline = carried if carried is not None else max(due_at, now) + schedule.grace
    return DueReview(grant, resource, anchor, due_at, deadline, remind_at(deadline, schedule.grace))


def _start(grant: Grant) -> datetime:
    return grant.starts_at or grant.created_at


def _end(grant: Grant) -> datetime | None:
    ends = [t for t in (grant.expires_at, grant.revoked_at) if t is not None]
    return min(ends) if ends else None


def held_run(grant: Grant, others: Iterable[Grant], gap: timedelta) -> list[Grant]:
    """`grant` and the holder's earlier grants (`others`: theirs on the same resource) that access was held
    on through: each ended (or was revoked) no more than `gap` before the run resumed. Newest first."""
    run = [grant]
    began = _start(grant)
    earlier = sorted((g for g in others if g.id != grant.id and _start(g) <= began), key=_start, reverse=True)
    for candidate in earlier:
        end = _end(candidate)
        if end is None or end + gap >= began:
            run.append(candidate)
            began = min(began, _start(candidate))
    return run


def run_start(run: Sequence[Grant]) -> datetime:
    return min(_start(g) for g in run)


def period_anchor(began: datetime, decisions: list[datetime]) -> datetime:
    """Where the current period starts: the last review decision, or when access began."""
    return max([began, *decisions])


def may_see(policy: Policy, review: AccessReview, viewer: Principal) -> bool:
    if viewer.name == review.principal or policy.is_admin(viewer):
        return True
    resource = policy.resource(review.resource_name)
    return resource is not None and not reviewer_groups(policy, resource).isdisjoint(viewer.groups)


def check_decision(policy: Policy, review: AccessReview, actor: Principal, now: datetime) -> Rejected | None:
    """Whether `actor` may confirm or revoke `review` now: a reviewer (or an admin), never its holder,
    while it is open and its grace period has not ended."""
    if actor.name == review.principal:
        return Rejected("self_review", "nobody reviews their own access")
    if not may_decide(policy, review, actor):
        return Rejected("not_a_reviewer", f"{actor.name} may not review access to {review.resource_name}")
    if review.status is not ReviewStatus.OPEN:
        by = f" by {review.decided_by}" if review.decided_by else ""
        return Rejected("already_decided", f"review {review.id} is already {review.status.value}{by}")
    if review.deadline <= now:
        return Rejected("review_missed", f"review {review.id} was not decided in time: access is revoked")
    return None


def may_decide(policy: Policy, review: AccessReview, actor: Principal) -> bool:
    if actor.name == review.principal:
        return False
    if policy.is_admin(actor):
        return True
    resource = policy.resource(review.resource_name)
    return resource is not None and not reviewer_groups(policy, resource).isdisjoint(actor.groups)
