"""The workflow's refusals: each fit to show to the person who asked, with a stable code for programs."""

from __future__ import annotations

from typing import Any

from proxy.access import policy as rules
from proxy.access.policy import Rejected, Resource
from proxy.access.terms import terms_sha256


class WorkflowError(Exception):
    """A refusal fit to show to the person who asked. `code` is stable for programs."""

    kind = "invalid"  # invalid | forbidden | not_found | conflict

    def __init__(self, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra or {}  # more members for the API's problem+json


class Invalid(WorkflowError):
    kind = "invalid"


class Forbidden(WorkflowError):
    kind = "forbidden"


class NotFound(WorkflowError):
    kind = "not_found"


class Conflict(WorkflowError):
    kind = "conflict"


def terms_refusal(resource: Resource, offered: str) -> Invalid:
    """No acknowledgement, or one of other text: the refusal carries the terms as they stand, so the
    client can show them and ask again with their hash."""
    code, why = (
        ("terms_changed", "the terms you accepted have changed since; read them again")
        if offered.strip()
        else ("terms_not_accepted", "accept them by sending accept_terms with their sha256")
    )
    return Invalid(
        code,
        f"{resource.name} has dataset terms: {why}",
        {"resource": resource.name, "terms": resource.terms, "terms_sha256": terms_sha256(resource.terms)},
    )


def refusal(rejected: Rejected) -> WorkflowError:
    """The policy's pure refusal as the error of the right kind."""
    if rejected.code in rules.FORBIDDEN_CODES:
        return Forbidden(rejected.code, rejected.message)
    if rejected.code in ("not_pending", "already_approved", "already_reviewed"):
        return Conflict(rejected.code, rejected.message)
    return Invalid(rejected.code, rejected.message)
