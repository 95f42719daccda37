"""The approvers' and admins' pages over the audit trail: the trail with filters, a grant's page with its
use, and who had access to a resource when. Server-rendered like the other pages; every query bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from proxy.access import coverage
from proxy.access.grants import Action, Grant
from proxy.access.requests import AccessRequest
from proxy.audit.store import AuditQuery, StoredEvent
from proxy.control.audit_api import audit_query
from proxy.control.trail import TRAIL, Trail, area_of, history_range
from proxy.control.webcore import WEB, BadRequest, Visit, page, render
from proxy.identity.principals import Principal
from proxy.workflow.errors import WorkflowError
from proxy.workflow.service import Workflow

PAGE_SIZE = 50
# The trail's filters, as the form names them (the audit API's parameter names, plus action and before).
TRAIL_FILTERS = ("principal", "resource", "action", "decision", "since", "until", "grant")


@dataclass(frozen=True, slots=True)
class TrailRow:
    """One audit event as the trail page shows it: chosen fields only, never the stored body whole."""

    seq: int
    at: str
    kind: str
    principal: str
    action: str
    target: str
    decision: str
    status: str
    bytes_in: int
    bytes_out: int
    grant_id: str
    reason: str


def trail_row(event: StoredEvent) -> TrailRow:
    body = event.body
    data: dict[str, Any] = body.get("event") or {}
    status = data.get("status") if body.get("kind") == "s3_request" else ""
    return TrailRow(
        seq=event.seq,
        at=str(body.get("at") or ""),
        kind=str(body.get("kind") or ""),
        principal=str(body.get("principal") or ""),
        action=str(data.get("action") or data.get("operation") or ""),
        target=str(body.get("target") or body.get("resource") or ""),
        decision=str(body.get("decision") or ""),
        status=str(status or ""),
        bytes_in=int(data.get("bytes_in") or 0),
        bytes_out=int(data.get("bytes_out") or 0),
        grant_id=str(body.get("grant_id") or ""),
        reason=str(data.get("deny_reason") or data.get("reason") or ""),
    )


def trail_query(params: Mapping[str, str], now: datetime, scope: tuple[str, ...] | None) -> AuditQuery:
    """The form's filters -> a query, confined to the resources the viewer may read (ValueError: bad)."""
    query = audit_query({k: params[k] for k in TRAIL_FILTERS if params.get(k)}, now)
    action = params.get("action") or None
    if action is not None and action not in {a.value for a in Action}:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(a.value for a in Action)}")
    before = params.get("before") or None
    if before is not None and not before.isdigit():
        raise ValueError("before must be a sequence number")
    return replace(query, action=action, before_seq=None if before is None else int(before), resources=scope)


def _trail(request: web.Request) -> Trail:
    trail = request.app.get(TRAIL)
    if trail is None:
        raise web.HTTPNotFound()
    return trail


def _forbidden(request: web.Request, visit: Visit, what: str) -> web.Response:
    return render(
        request.app[WEB],
        visit,
        "error.html",
        status=403,
        title="Not for you",
        message=f"{what} is for approvers and admins: ask an admin if you need to see it.",
    )


@page()
async def audit_trail(request: web.Request, visit: Visit) -> web.StreamResponse:
    trail = _trail(request)
    who = visit.principal
    assert who is not None
    scope = trail.scope(who)
    if scope == ():
        return _forbidden(request, visit, "The audit trail")
    try:
        query = trail_query(request.query, visit.now, scope)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    found = await trail.page(query, PAGE_SIZE)
    filters = {k: request.query[k] for k in TRAIL_FILTERS if request.query.get(k)}
    older = None if found.older is None else "/audit?" + urlencode({**filters, "before": found.older})
    return render(
        request.app[WEB],
        visit,
        "audit.html",
        title="Audit trail",
        nav="audit",
        rows=[trail_row(e) for e in found.events],
        searched_from=found.searched_from,
        filters=filters,
        actions=[a.value for a in Action],
        paged="before" in request.query,
        newest="/audit?" + urlencode(filters),
        older=older,
        scoped=scope,
    )


@page()
async def grant_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    trail = _trail(request)
    ctx = request.app[WEB]
    who = visit.principal
    assert who is not None
    try:
        grant = await ctx.workflow.get_grant(request.match_info["id"], who)
    except WorkflowError as exc:
        return render(ctx, visit, "error.html", status=404, title="No such grant", message=exc.message)
    origin = await _request_of(ctx.workflow, grant, who)
    use = await trail.grant_use(grant)
    return render(
        ctx,
        visit,
        "grant.html",
        title=f"Grant {grant.id}",
        nav="grants",
        grant=grant,
        state=grant_status(grant, visit.now),
        origin=origin,
        use=use,
    )


async def _request_of(workflow: Workflow, grant: Grant, viewer: Principal) -> AccessRequest | None:
    if grant.request_id is None:
        return None
    try:
        return await workflow.get_request(grant.request_id, viewer)
    except WorkflowError:
        return None  # a request this viewer may not read


def grant_status(grant: Grant, now: datetime) -> str:
    if grant.revoked_at is not None and grant.revoked_at <= now:
        return "revoked"
    if grant.expires_at is not None and grant.expires_at <= now:
        return "expired"
    if grant.is_scheduled(now):
        return "scheduled"
    return "active"


@page()
async def access_history(request: web.Request, visit: Visit) -> web.StreamResponse:
    trail = _trail(request)
    ctx = request.app[WEB]
    who = visit.principal
    assert who is not None
    if trail.scope(who) == ():
        return _forbidden(request, visit, "Who had access when")
    asked = request.query.get("resource", "")
    try:
        since, until = history_range(request.query, visit.now)
        area = area_of(ctx.workflow.policy, asked) if asked.strip() else None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    found = await trail.history_of(who, area, since, until) if area is not None else None
    return render(
        ctx,
        visit,
        "history.html",
        title="Who had access when",
        nav="history",
        asked=asked,
        since_text=request.query.get("since", ""),
        until_text=request.query.get("until", ""),
        range_from=since,
        range_to=until,
        rows=[(s, coverage.bar(s, since, until)) for s in found.spans] if found else [],
        usage=found.usage if found else {},
        truncated=found is not None and found.truncated,
    )


def install(app: web.Application) -> None:
    app.router.add_get("/audit", audit_trail)
    app.router.add_get("/history", access_history)
    app.router.add_get("/grants/{id}", grant_page)
