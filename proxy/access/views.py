"""A grant as JSON: the one shape the API answers with and the CLI prints with --json; pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from proxy.access.budgets import Usage
from proxy.access.durations import iso
from proxy.access.grants import Grant


def grant_to_json(grant: Grant, now: datetime | None = None, usage: Usage | None = None) -> dict[str, Any]:
    """`now`: also say whether the grant is active then; `usage`: what its budget has spent so far."""
    body: dict[str, Any] = {
        "id": grant.id,
        "principal": grant.principal,
        "resource": grant.resource,
        "bucket": grant.bucket,
        "prefix": grant.prefix,
        "actions": sorted(a.value for a in grant.actions),
        "created_at": iso(grant.created_at),
        "expires_at": iso(grant.expires_at),
        "revoked_at": iso(grant.revoked_at),
        "source": grant.source,
        "request_id": grant.request_id,
        "created_by": grant.extra.get("created_by", ""),
        "revoked_by": grant.extra.get("revoked_by") or None,
        "revoke_reason": grant.extra.get("revoke_reason") or None,
        "starts_at": iso(grant.starts_at),
        "budget": grant.budget.as_dict() if grant.budget is not None else None,
        "usage": (usage or Usage()).as_dict(),
        "budget_spent": grant.spent,
        "approvals": grant.approvals,  # distinct people who approved it (protected resources need two)
        "terms_accepted": grant.terms.as_dict() if grant.terms is not None else None,
    }
    if now is not None:
        body["active"] = grant.is_active(now)
    return body
