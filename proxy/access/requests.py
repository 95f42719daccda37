"""Access requests: the values the workflow moves through its lifecycle (pure).

pending -> approved | denied | cancelled | expired. Approval creates a grant whose clock starts then.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from proxy.access.budgets import Budget
from proxy.access.grants import Action
from proxy.access.terms import TermsAcceptance


class Via(StrEnum):
    """How a request was asked for (for the security team: a held principal asking again, and where)."""

    API = "api"
    CLI = "cli"
    WEB = "web"
    SLACK = "slack"


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Approval:
    approver: str
    decided_at: datetime
    comment: str = ""


@dataclass(frozen=True, slots=True)
class BundlePart:
    """One more resource of a bundle: granted with the request's first, together or not at all."""

    resource_name: str
    bucket: str
    prefix: str

    @property
    def resource(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    id: str
    requester: str
    resource_name: str  # the policy resource the request was matched to, e.g. "models"
    bucket: str
    prefix: str
    actions: frozenset[Action]
    duration: timedelta
    justification: str
    status: RequestStatus
    created_at: datetime
    expires_at: datetime  # when a still-pending request lapses
    approvals_required: int = 1
    approvals: tuple[Approval, ...] = ()
    break_glass: bool = False
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_comment: str = ""
    grant_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # Networks the grant may be used from, copied from the policy rule when the request was made.
    source_cidrs: tuple[str, ...] = ()
    # Break-glass grants are reviewed after the fact by an approver or an admin.
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_comment: str = ""
    # Scheduled access: the window starts here rather than at approval (None: at approval).
    starts_at: datetime | None = None
    ticket: str = ""  # a reference in the team's tracker, e.g. ML-1234, when the rule asks for one
    # An extension: the grant it extends (its window starts where that grant ends).
    extends: str | None = None
    # A bundle: the resources asked for besides the first (the request's own), and once approved every
    # grant made, in the same order (grant_id is the first).
    bundle: tuple[BundlePart, ...] = ()
    grant_ids: tuple[str, ...] = ()

    def parts(self) -> tuple[AccessRequest, ...]:
        """One request per resource asked for (just this one unless it is a bundle), for the rules that
        judge a resource at a time: each part's own rule must be satisfied."""
        return (
            replace(self, bundle=()),
            *(
                replace(self, resource_name=p.resource_name, bucket=p.bucket, prefix=p.prefix, bundle=())
                for p in self.bundle
            ),
        )

    @property
    def resources(self) -> tuple[str, ...]:
        return (self.resource, *(p.resource for p in self.bundle))

    @property
    def is_extension(self) -> bool:
        return self.extends is not None

    budget: Budget | None = None  # what the grant may move in all, within the rule's maximum
    # Overwrites or deletes under a protected resource: two distinct approvals, never instant.
    protected: bool = False
    terms: TermsAcceptance | None = None  # the resource's dataset terms the requester accepted

    @property
    def resource(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def approvers(self) -> frozenset[str]:
        return frozenset(a.approver for a in self.approvals)

    @property
    def needs_review(self) -> bool:
        return self.break_glass and self.reviewed_at is None

    def window(self, approved_at: datetime) -> tuple[datetime | None, datetime]:
        """(starts_at, expires_at) of the grant an approval at `approved_at` creates: a scheduled window
        keeps its end whenever it is approved; otherwise the clock starts at the approval."""
        if self.starts_at is not None and self.starts_at > approved_at:
            return self.starts_at, self.starts_at + self.duration
        if self.starts_at is not None:
            return None, self.starts_at + self.duration
        return None, approved_at + self.duration

    def is_open(self, now: datetime) -> bool:
        """Still waiting for decisions: pending and not yet past its pending deadline."""
        return self.status is RequestStatus.PENDING and now < self.expires_at
