"""Workflow events: one per state change of a request or grant, with who did it and why.

The workflow emits them on the EventBus; audit, Slack and webhooks subscribe without the workflow
knowing they exist. Each event turns into a flat, JSON-ready dict with `as_dict()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from proxy.access.budgets import Usage
from proxy.access.durations import iso
from proxy.access.grants import Grant
from proxy.access.requests import AccessRequest
from proxy.access.reviews import AccessReview
from proxy.audit.records import Usage as GrantUsage


def request_fields(request: AccessRequest) -> dict[str, Any]:
    return {
        "request_id": request.id,
        "requester": request.requester,
        "resource_name": request.resource_name,
        "resource": request.resource,
        "actions": sorted(a.value for a in request.actions),
        "duration_seconds": int(request.duration.total_seconds()),
        "justification": request.justification,
        "status": request.status.value,
        "break_glass": request.break_glass,
        "approvals": [a.approver for a in request.approvals],
        "approvals_required": request.approvals_required,
        "grant_id": request.grant_id,
        "ticket": request.ticket or None,
        "starts_at": iso(request.starts_at),
        "terms_accepted": request.terms.as_dict() if request.terms is not None else None,
    }


def grant_fields(grant: Grant) -> dict[str, Any]:
    return {
        "grant_id": grant.id,
        "principal": grant.principal,
        "resource": grant.resource,
        "actions": sorted(a.value for a in grant.actions),
        "expires_at": iso(grant.expires_at),
        "revoked_at": iso(grant.revoked_at),
        "source": grant.source,
        "request_id": grant.request_id,
        "starts_at": iso(grant.starts_at),
        "budget": grant.budget.as_dict() if grant.budget is not None else None,
        "terms_accepted": grant.terms.as_dict() if grant.terms is not None else None,
    }


def review_fields(review: AccessReview) -> dict[str, Any]:
    return {
        "review_id": review.id,
        "grant_id": review.grant_id,
        "principal": review.principal,
        "resource_name": review.resource_name,
        "resource": review.resource,
        "period_start": iso(review.period_start),
        "due_at": iso(review.due_at),
        "deadline": iso(review.deadline),
        "review_status": review.status.value,
        "decided_by": review.decided_by or None,
        "comment": review.comment or None,
    }


@dataclass(frozen=True, slots=True)
class WorkflowEvent:
    """Base of every workflow event: when, who caused it (a principal or "system"), and why."""

    kind: ClassVar[str] = "workflow_event"
    at: datetime
    actor: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": iso(self.at), "actor": self.actor, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RequestCreated(WorkflowEvent):
    """A request was made; `request.status` says whether it is pending or was granted at once."""

    kind: ClassVar[str] = "request_created"
    request: AccessRequest

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **request_fields(self.request)}


@dataclass(frozen=True, slots=True)
class ApprovalRecorded(WorkflowEvent):
    """One approver approved; `request` may still need more approvals (N of M)."""

    kind: ClassVar[str] = "approval_recorded"
    request: AccessRequest

    def as_dict(self) -> dict[str, Any]:
        # The principal of this event is who approved (the audit trail's "who"), not who asked.
        return {**WorkflowEvent.as_dict(self), **request_fields(self.request), "principal": self.actor}


@dataclass(frozen=True, slots=True)
class RequestDecided(WorkflowEvent):
    """A request left `pending`: approved, denied, cancelled by its requester, or expired."""

    kind: ClassVar[str] = "request_decided"
    request: AccessRequest

    @property
    def decision(self) -> str:
        return self.request.status.value

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **request_fields(self.request), "decision": self.decision}


@dataclass(frozen=True, slots=True)
class GrantCreated(WorkflowEvent):
    kind: ClassVar[str] = "grant_created"
    grant: Grant

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **grant_fields(self.grant)}


@dataclass(frozen=True, slots=True)
class GrantRevoked(WorkflowEvent):
    kind: ClassVar[str] = "grant_revoked"
    grant: Grant

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **grant_fields(self.grant)}


@dataclass(frozen=True, slots=True)
class GrantExpiring(WorkflowEvent):
    """Sent once per grant, `policy.expiry_warning` before it ends."""

    kind: ClassVar[str] = "grant_expiring"
    grant: Grant

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **grant_fields(self.grant)}


@dataclass(frozen=True, slots=True)
class GrantExpired(WorkflowEvent):
    """Sent once per grant that reached its expiry without being revoked."""

    kind: ClassVar[str] = "grant_expired"
    grant: Grant

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **grant_fields(self.grant)}


@dataclass(frozen=True, slots=True)
class GrantBudgetSpent(WorkflowEvent):
    """Sent once per grant whose byte budget ran out: its reads are refused from now on."""

    kind: ClassVar[str] = "grant_budget_spent"
    grant: Grant
    usage: Usage

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **grant_fields(self.grant), "usage": self.usage.as_dict()}


@dataclass(frozen=True, slots=True)
class BreakGlassUsed(WorkflowEvent):
    """An emergency grant was taken without approval: always alert, review after the fact."""

    kind: ClassVar[str] = "break_glass_used"
    request: AccessRequest
    grant: Grant

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **request_fields(self.request), **grant_fields(self.grant)}


@dataclass(frozen=True, slots=True)
class BreakGlassReviewed(WorkflowEvent):
    kind: ClassVar[str] = "break_glass_reviewed"
    request: AccessRequest

    def as_dict(self) -> dict[str, Any]:
        return {**WorkflowEvent.as_dict(self), **request_fields(self.request)}


@dataclass(frozen=True, slots=True)
class ReviewDue(WorkflowEvent):
    """A long-held grant needs a review (`final`: the last reminder before the grace period ends)."""

    kind: ClassVar[str] = "review_due"
    review: AccessReview
    reviewers: tuple[str, ...] = ()  # the groups that may decide it
    final: bool = False
    use: GrantUsage | None = None  # the holder's use over the period under review, so far

    def as_dict(self) -> dict[str, Any]:
        return {
            **WorkflowEvent.as_dict(self),
            **review_fields(self.review),
            "reviewers": list(self.reviewers),
            "final": self.final,
            "use": self.use.as_dict() if self.use is not None else None,
        }


@dataclass(frozen=True, slots=True)
class ReviewDecided(WorkflowEvent):
    """A review closed: confirmed or revoked by a reviewer, or missed (the grant revoked by the sweep)."""

    kind: ClassVar[str] = "review_decided"
    review: AccessReview

    def as_dict(self) -> dict[str, Any]:
        return {
            **WorkflowEvent.as_dict(self),
            **review_fields(self.review),
            "decision": self.review.status.value,
        }


ALL_EVENTS: tuple[type[WorkflowEvent], ...] = (
    RequestCreated,
    ApprovalRecorded,
    RequestDecided,
    GrantCreated,
    GrantRevoked,
    GrantExpiring,
    GrantExpired,
    GrantBudgetSpent,
    BreakGlassUsed,
    BreakGlassReviewed,
    ReviewDue,
    ReviewDecided,
)
