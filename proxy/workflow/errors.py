"""The workflow's refusals: each fit to show to the person who asked, with a stable code for programs."""

from __future__ import annotations

from proxy.access import policy as rules
from proxy.access.policy import Rejected


class WorkflowError(Exception):
    """A refusal fit to show to the person who asked. `code` is stable for programs."""

    kind = "invalid"  # invalid | forbidden | not_found | conflict

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Invalid(WorkflowError):
    kind = "invalid"


class Forbidden(WorkflowError):
    kind = "forbidden"


class NotFound(WorkflowError):
    kind = "not_found"


class Conflict(WorkflowError):
    kind = "conflict"


def refusal(rejected: Rejected) -> WorkflowError:
    """The policy's pure refusal as the error of the right kind."""
    if rejected.code in rules.FORBIDDEN_CODES:
        return Forbidden(rejected.code, rejected.message)
    if rejected.code in ("not_pending", "already_approved", "already_reviewed"):
        return Conflict(rejected.code, rejected.message)
    return Invalid(rejected.code, rejected.message)
