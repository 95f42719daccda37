"""The audit API under /api/v1/audit: query and export the trail, verify it, grant usage, suspensions;
and beside it `/grants/{id}/usage` and `/access-history` (who had access to a resource when).

Mounted into the /api/v1 sub-application, so its bearer-token authentication and problem+json errors
apply. Reading the trail takes an admin group or one of `[audit] reader_groups`; a grant's usage is
visible to whoever may see the grant; lifting a suspension takes an approver of the grant's resource
(or an admin) who is not the grant's holder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from proxy.access.coverage import Span
from proxy.access.grants import Grant
from proxy.access.policy import Policy, resource_of_grant
from proxy.audit.records import Usage, iso, parse_moment
from proxy.audit.store import AuditQuery
from proxy.control.api import WORKFLOW, Problem, caller
from proxy.control.trail import TRAIL, History, area_of, history_range
from proxy.identity.principals import Principal
from proxy.observe.observers import Observability
from proxy.store.suspensions import Suspension

OBSERVABILITY = web.AppKey("observability", Observability)
MAX_PAGE = 1000
NDJSON = "application/x-ndjson"


def may_read_trail(request: web.Request, principal: Principal) -> bool:
    workflow = request.app[WORKFLOW]
    readers = frozenset(request.app[OBSERVABILITY].settings.audit.reader_groups)
    return workflow.policy.is_admin(principal) or not readers.isdisjoint(principal.groups)


def _require_reader(request: web.Request) -> None:
    principal = caller(request)
    if not may_read_trail(request, principal):
        raise Problem(403, "forbidden", f"{principal.name} may not read the audit trail")


def audit_query(params: Any, now: datetime) -> AuditQuery:
    """Query parameters -> AuditQuery; ValueError with a readable message on a bad value."""

    def moment(name: str) -> datetime | None:
        value = params.get(name)
        return parse_moment(value, now) if value else None

    limit = params.get("limit")
    paging = "after" in params
    after = params.get("after", "0")
    if limit is not None and (not limit.isdigit() or not 0 < int(limit) <= MAX_PAGE):
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    if not after.isdigit():
        raise ValueError("after must be a sequence number")
    return AuditQuery(
        principal=params.get("principal") or None,
        resource=params.get("resource") or None,
        grant_id=params.get("grant") or None,
        decision=params.get("decision") or None,
        kind=params.get("kind") or None,
        plane=params.get("plane") or None,
        since=moment("since"),
        until=moment("until"),
        after_seq=int(after),
        limit=None if limit is None else int(limit),
        # `?limit=N` alone: the newest N, as `grantgate audit --limit N`; with `after`, the next page.
        latest=limit is not None and not paging,
    )


async def list_events(request: web.Request) -> web.StreamResponse:
    """Events oldest first. `format=jsonl` streams every match as JSON lines (a SIEM export)."""
    _require_reader(request)
    obs = request.app[OBSERVABILITY]
    export = request.query.get("format") == "jsonl"
    try:
        query = audit_query(request.query, datetime.now(UTC))
    except ValueError as exc:
        raise Problem(400, "invalid_query", str(exc)) from None
    if export:
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        async for event in obs.audit.stream(query):
            await response.write(json.dumps(event.as_dict()).encode() + b"\n")
        await response.write_eof()
        return response
    if query.limit is None:
        query = replace(query, limit=MAX_PAGE)
    events = await obs.audit.query(query)
    more = len(events) == query.limit and not query.latest
    return web.json_response(
        {"events": [e.as_dict() for e in events], "next_after": events[-1].seq if more else None}
    )


async def verify(request: web.Request) -> web.Response:
    _require_reader(request)
    report = await request.app[OBSERVABILITY].audit.verify()
    return web.json_response(report.as_dict())


async def grant_usage(request: web.Request) -> web.Response:
    grant_id = request.match_info["grant_id"]
    grant = await request.app[WORKFLOW].get_grant(grant_id, caller(request))  # 404 unless visible
    usage = await request.app[OBSERVABILITY].audit.usage(grant.id)
    body: dict[str, Any] = {
        "grant_id": grant.id,
        "principal": grant.principal,
        "resource": grant.resource,
        "requests": 0,
        "objects_read": 0,
        "bytes_read": 0,
        "objects_written": 0,
        "bytes_written": 0,
        "first_used_at": None,
        "last_used_at": None,
    }
    if usage is not None:
        body.update({k: v for k, v in usage.as_dict().items() if k not in ("grant_id", "principal")})
    # Objects are distinct object versions, not reads: eight ranged reads of one file are one object.
    receipts = await request.app[OBSERVABILITY].audit.receipts(grant_id=grant.id)
    for field, direction in (("objects_read", "read"), ("objects_written", "write")):
        body[field] = len(
            {(r["bucket"], r["key"], r["version_id"]) for r in receipts if r["direction"] == direction}
        )
    trail = request.app.get(TRAIL)
    if trail is not None:
        use = await trail.grant_use(grant)
        body["top_keys"] = [k.as_dict() for k in use.keys]
        body["top_keys_partial"] = use.partial  # folded from the newest requests only
    return web.json_response(body)


async def access_history(request: web.Request) -> web.Response:
    """Who had access to `?resource=` (s3://bucket/prefix, an object or a resource name) between `since`
    and `until` (default: the last week): each covering grant's span, approver and use."""
    trail = request.app[TRAIL]
    who = caller(request)
    if trail.scope(who) == ():
        raise Problem(403, "forbidden", f"{who.name} may not see who had access: approvers and admins may")
    asked = request.query.get("resource", "")
    if not asked.strip():
        raise Problem(400, "invalid_query", "resource is required: s3://bucket/prefix or a resource name")
    try:
        since, until = history_range(request.query, datetime.now(UTC))
        area = area_of(trail.workflow.policy, asked)
    except ValueError as exc:
        raise Problem(400, "invalid_query", str(exc)) from None
    found = await trail.history_of(who, area, since, until)
    return web.json_response(history_json(asked, since, until, found))


def history_json(asked: str, since: datetime, until: datetime, found: History) -> dict[str, Any]:
    return {
        "resource": asked,
        "since": iso(since),
        "until": iso(until),
        "truncated": found.truncated,
        "grants": [span_json(s, found.usage[s.grant.id]) for s in found.spans],
    }


def span_json(span: Span, usage: Usage) -> dict[str, Any]:
    grant = span.grant
    return {
        "grant_id": grant.id,
        "principal": grant.principal,
        "resource": grant.resource,
        "actions": sorted(a.value for a in grant.actions),
        "from": iso(span.start),
        "until": iso(span.end),
        "covers": "whole" if span.whole else "part",
        "source": grant.source,
        "approved_by": grant.extra.get("created_by") or None,
        "requests": usage.requests,
        "bytes_read": usage.bytes_read,
        "bytes_written": usage.bytes_written,
        "last_used_at": iso(usage.last_used_at) if usage.last_used_at else None,
    }


async def list_receipts(request: web.Request) -> web.Response:
    """Which exact objects and versions a principal or grant took: `?principal=&grant_id=&since=`."""
    _require_reader(request)
    since = request.query.get("since")
    try:
        moment = parse_moment(since, datetime.now(UTC)) if since else None
    except ValueError as exc:
        raise Problem(400, "invalid_query", str(exc)) from None
    found = await request.app[OBSERVABILITY].audit.receipts(
        principal=request.query.get("principal") or None,
        grant_id=request.query.get("grant_id") or None,
        since=moment,
    )
    return web.json_response({"receipts": found})


async def list_suspensions(request: web.Request) -> web.Response:
    _require_reader(request)
    everything = request.query.get("all") in ("1", "true")
    found = await request.app[OBSERVABILITY].suspensions.list(active_only=not everything)
    return web.json_response({"suspensions": [suspension_json(s) for s in found]})


def may_lift(policy: Policy, actor: Principal, grant: Grant) -> bool:
    """An approver of the grant's resource, or an admin; never the grant's own holder."""
    if actor.name == grant.principal:
        # The suspension is the anomaly rule's doubt about this very holder's use.
        return False
    resource = resource_of_grant(policy, grant)
    approver = resource is not None and policy.is_approver_of(actor, resource.name)
    return approver or policy.is_admin(actor)


async def lift_suspension(request: web.Request) -> web.Response:
    """An approver of the resource (or an admin), never the holder, re-confirms a suspended grant."""
    workflow = request.app[WORKFLOW]
    actor = caller(request)
    grant = await workflow.get_grant(request.match_info["grant_id"], actor)
    if actor.name == grant.principal:
        raise Problem(403, "forbidden", f"{actor.name} may not lift the suspension of their own grant")
    if not may_lift(workflow.policy, actor, grant):
        raise Problem(403, "forbidden", f"{actor.name} may not re-confirm grants on {grant.resource}")
    lifted = await request.app[OBSERVABILITY].suspensions.lift_suspension(
        grant.id, actor=actor.name, now=datetime.now(UTC)
    )
    if not lifted:
        raise Problem(409, "not_suspended", f"grant {grant.id} is not suspended")
    return web.json_response({"grant_id": grant.id, "status": "active", "reconfirmed_by": actor.name})


def suspension_json(s: Suspension) -> dict[str, Any]:
    return {
        "grant_id": s.grant_id,
        "suspended_at": iso(s.suspended_at),
        "reason": s.reason,
        "lifted_at": iso(s.lifted_at) if s.lifted_at else None,
        "lifted_by": s.lifted_by or None,
    }


ROUTES = (
    ("GET", "/audit", list_events),
    ("GET", "/audit/verify", verify),
    ("GET", "/audit/usage/{grant_id}", grant_usage),
    ("GET", "/grants/{grant_id}/usage", grant_usage),
    ("GET", "/access-history", access_history),
    ("GET", "/audit/receipts", list_receipts),
    ("GET", "/audit/suspensions", list_suspensions),
    ("POST", "/audit/suspensions/{grant_id}/lift", lift_suspension),
)


def install(api: web.Application, obs: Observability) -> None:
    """Add the audit routes to the /api/v1 sub-application (before it is mounted)."""
    api[OBSERVABILITY] = obs
    for method, path, handler in ROUTES:
        api.router.add_route(method, path, handler)
