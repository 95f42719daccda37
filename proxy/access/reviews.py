"""Periodic access reviews as values: one review of one long-held grant, its status and the decisions a
reviewer makes (the rules are in proxy/access/review_rules.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MISSED_REASON = "review missed"


class ReviewStatus(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"  # access continues until the next review
    REVOKED = "revoked"  # a reviewer ended it
    MISSED = "missed"  # nobody decided within the grace period: revoked by the sweep
    LAPSED = "lapsed"  # the grant ended (expired, revoked) before anyone decided: nothing to do


class Decision(StrEnum):
    CONFIRM = "confirm"
    REVOKE = "revoke"


@dataclass(frozen=True, slots=True)
class AccessReview:
    id: str
    grant_id: str
    principal: str  # the holder
    resource_name: str
    bucket: str
    prefix: str
    period_start: datetime  # access began, or was last confirmed
    due_at: datetime
    deadline: datetime  # due_at + grace: undecided by then, the grant is revoked
    remind_at: datetime  # when the last reminder goes out
    created_at: datetime
    status: ReviewStatus = ReviewStatus.OPEN
    reminded_at: datetime | None = None
    decided_by: str = ""
    decided_at: datetime | None = None
    comment: str = ""

    @property
    def resource(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_decision(value: object) -> Decision | None:
    try:
        return Decision(str(value).strip().lower())
    except ValueError:
        return None
