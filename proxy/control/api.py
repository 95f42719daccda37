"""The JSON API under /api/v1: access requests, approvals and grants for bearer-token holders.

Thin over the workflow service: parse, call one method, render. Errors are RFC 9457 problem details
(application/problem+json). The OpenAPI document describing every route is in openapi.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from proxy.access import context as approver_context
from proxy.access.budgets import Budget
from proxy.access.durations import format_duration, iso, parse_moment
from proxy.access.policy import Resource, Rule
from proxy.access.requests import AccessRequest, RequestStatus, Via
from proxy.access.terms import terms_sha256
from proxy.access.views import grant_to_json
from proxy.client import CLI_USER_AGENT
from proxy.control.approver_context import APPROVER_CONTEXT, ApproverContext
from proxy.control.openapi import openapi_document
from proxy.identity.principals import Principal
from proxy.workflow.budgets import usage_of
from proxy.workflow.bundles import request_bundle
from proxy.workflow.extend import extend_grant
from proxy.workflow.service import Outcome, Workflow, WorkflowError

log = structlog.get_logger("grantgate.api")

WORKFLOW = web.AppKey("workflow", Workflow)
# Request key of the authenticated caller; typed keys exist from aiohttp 3.14 (strings warn there).
PRINCIPAL: Any = (
    web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "grantgate.principal"
)
PROBLEM_JSON = "application/problem+json"
MAX_TEXT = 2000
_PUBLIC = frozenset({"/api/v1/openapi.json"})
_STATUS = {"invalid": 422, "forbidden": 403, "not_found": 404, "conflict": 409}
_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Request refused by policy",
    500: "Internal error",
    503: "Service unavailable",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- problems ---------------------------------------------------------------------------------------


class Problem(Exception):
    """An API error, rendered as application/problem+json."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}  # extension members (RFC 9457 section 3.2)


def problem_response(request: web.Request, problem: Problem) -> web.Response:
    body = {
        "type": f"urn:grantgate:problem:{problem.code}",
        "title": _TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.path,
        "code": problem.code,
        **problem.extra,
    }
    return web.Response(
        status=problem.status,
        text=json.dumps(body),
        content_type=PROBLEM_JSON,
        headers=problem.headers,
    )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure under /api/v1 leaves as problem+json, never as HTML or a traceback."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(request, problem)
    except WorkflowError as exc:
        return problem_response(request, Problem(_STATUS[exc.kind], exc.code, exc.message, extra=exc.extra))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        detail = {
            404: f"no such API route: {request.method} {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        return problem_response(request, Problem(exc.status, code, detail))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        # Every write is one transaction, so a store that fails mid-way has applied nothing.
        log.error("api_store_unavailable", method=request.method, path=request.path, error=repr(exc))
        detail = "the store cannot be reached; nothing was changed, try again shortly"
        return problem_response(request, Problem(503, "store_unavailable", detail, {"Retry-After": "5"}))
    except Exception:
        log.exception("api_failed", method=request.method, path=request.path)
        return problem_response(
            request, Problem(500, "internal_error", "something went wrong; see the server log")
        )


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer API tokens (`grantgate tokens create PRINCIPAL`); groups are read fresh on every call."""
    if request.path in _PUBLIC:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="grantgate"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "unauthenticated", "send an API token: Authorization: Bearer <token>", challenge)
    principal = await request.app[WORKFLOW].authenticate_token(token.strip())
    if principal is None:
        raise Problem(401, "invalid_token", "the API token is unknown or revoked", challenge)
    request[PRINCIPAL] = principal
    return await handler(request)


def caller(request: web.Request) -> Principal:
    principal = request[PRINCIPAL]
    # Only the token middleware sets it; anything else here is a wiring bug, refused rather than served.
    if not isinstance(principal, Principal):
        raise Problem(401, "unauthenticated", "no authenticated caller for this route")
    return principal


# --- rendering --------------------------------------------------------------------------------------


def request_to_json(request: AccessRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "status": request.status.value,
        "requester": request.requester,
        "resource": request.resource,
        "resource_name": request.resource_name,
        "bucket": request.bucket,
        "prefix": request.prefix,
        "actions": sorted(a.value for a in request.actions),
        "duration": format_duration(request.duration),
        "duration_seconds": int(request.duration.total_seconds()),
        "justification": request.justification,
        "created_at": iso(request.created_at),
        "pending_until": iso(request.expires_at),
        "approvals_required": request.approvals_required,
        "approvals": [
            {"approver": a.approver, "at": iso(a.decided_at), "comment": a.comment} for a in request.approvals
        ],
        "decided_by": request.decided_by,
        "decided_at": iso(request.decided_at),
        "decision_comment": request.decision_comment,
        "grant_id": request.grant_id,
        "break_glass": request.break_glass,
        "needs_review": request.needs_review,
        "reviewed_by": request.reviewed_by,
        "reviewed_at": iso(request.reviewed_at),
        "review_comment": request.review_comment,
        "source_cidrs": list(request.source_cidrs),
        "starts_at": iso(request.starts_at),
        "ticket": request.ticket or None,
        "extends": request.extends,
        "resources": list(request.resources),
        "grant_ids": list(request.grant_ids) or ([request.grant_id] if request.grant_id else []),
        "budget": request.budget.as_dict() if request.budget is not None else None,
        "protected": request.protected,
        "terms_accepted": request.terms.as_dict() if request.terms is not None else None,
    }


def outcome_to_json(outcome: Outcome, now: datetime) -> dict[str, Any]:
    return {
        **request_to_json(outcome.request),
        "grant": grant_to_json(outcome.grant, now) if outcome.grant else None,
        "already_granted": [grant_to_json(g, now) for g in outcome.already_granted],
        "message": outcome.message,
    }


def rule_to_json(resource: Resource, rule: Rule, principal: Principal) -> dict[str, Any]:
    return {
        "resource": resource.name,
        "description": resource.description,
        "paths": [str(p) for p in resource.paths],
        "protected": resource.protected,
        "terms": resource.terms or None,
        "terms_sha256": terms_sha256(resource.terms) if resource.terms else None,
        "actions": sorted(a.value for a in rule.actions),
        "default_duration": format_duration(rule.default_duration),
        "max_duration": format_duration(rule.max_duration),
        "justification_required": rule.justification_required,
        "justification_min_length": rule.justification_min_length,
        "instant": not rule.instant_groups.isdisjoint(principal.groups) or rule.approvals_required == 0,
        "approvals_required": rule.approvals_required,
        "approver_groups": sorted(rule.approver_groups),
        "break_glass": rule.break_glass,
        "source_cidrs": list(rule.source_cidrs),
        "ticket_required": rule.ticket_required,
        "ticket_pattern": rule.ticket_pattern or None,
        "budget": rule.budget.as_dict() if rule.budget is not None else None,
        "max_budget": rule.max_budget.as_dict() if rule.max_budget is not None else None,
    }


# --- input ------------------------------------------------------------------------------------------


def budget_field(body: dict[str, Any]) -> Budget | None:
    """`"budget": {"max_bytes": int, "max_objects": int, "single_use": bool}`, each optional."""
    try:
        return Budget.from_dict(body.get("budget"))
    except ValueError as exc:
        raise Problem(400, "invalid_budget", str(exc)) from None


async def json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    if not request.can_read_body:
        if required:
            raise Problem(400, "invalid_body", "send a JSON object as the request body")
        return {}
    try:
        body = await request.json(loads=json.loads)
    except ValueError:
        raise Problem(400, "invalid_body", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "invalid_body", "the request body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, *, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise Problem(400, "invalid_body", f"{name!r} must be a string")
    if len(value) > MAX_TEXT:
        raise Problem(400, "invalid_body", f"{name!r} is longer than {MAX_TEXT} characters")
    return value


def moment_field(body: dict[str, Any], name: str) -> datetime | None:
    """An optional RFC 3339 time, e.g. "2025-06-01T22:00:00Z"."""
    text = text_field(body, name)
    if not text:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise Problem(400, "invalid_body", f"{name!r}: {exc}") from None


def _resources_field(body: dict[str, Any]) -> list[str]:
    """`"resource": "..."`, or `"resources": [..]` for a bundle granted together; never both."""
    if "resources" in body and "resource" in body:
        raise Problem(400, "invalid_body", "send 'resource' or 'resources', not both")
    if "resources" not in body:
        resource = text_field(body, "resource")
        if not resource:
            raise Problem(400, "invalid_body", "'resource' is required, e.g. \"s3://bucket/prefix/\"")
        return [resource]
    resources = body["resources"]
    if (
        not isinstance(resources, list)
        or not resources
        or not all(isinstance(r, str) and r.strip() and len(r) <= MAX_TEXT for r in resources)
    ):
        raise Problem(
            400, "invalid_body", "'resources' must be a non-empty list of resources, e.g. [\"models\"]"
        )
    return resources


def _bool_query(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise Problem(400, "invalid_query", f"{name} must be true or false, got {value!r}")


def _status_query(request: web.Request) -> RequestStatus | None:
    value = request.query.get("status")
    if not value:
        return None
    try:
        return RequestStatus(value.lower())
    except ValueError:
        known = ", ".join(s.value for s in RequestStatus)
        raise Problem(400, "invalid_query", f"unknown status {value!r}; one of: {known}") from None


# --- handlers ---------------------------------------------------------------------------------------


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def whoami(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    who = caller(request)
    policy = workflow.policy
    return web.json_response(
        {
            "principal": who.name,
            "groups": sorted(who.groups),
            "admin": policy.is_admin(who),
            "approver_for": [r.name for r in policy.resources if policy.is_approver_of(who, r.name)],
            "requestable": [rule_to_json(res, rule, who) for res, rule in policy.requestable_by(who)],
        }
    )


async def list_resources(request: web.Request) -> web.Response:
    who = caller(request)
    policy = request.app[WORKFLOW].policy
    mine = dict(policy.requestable_by(who))
    out = []
    for resource in policy.resources:
        rule = mine.get(resource)
        out.append(
            {
                "name": resource.name,
                "description": resource.description,
                "paths": [str(p) for p in resource.paths],
                "terms": resource.terms or None,
                "terms_sha256": terms_sha256(resource.terms) if resource.terms else None,
                "requestable": rule is not None,
                "rule": rule_to_json(resource, rule, who) if rule is not None else None,
            }
        )
    return web.json_response({"resources": out})


def asked_via(request: web.Request) -> Via:
    """The CLI says who it is in its User-Agent (proxy/client.py); anything else is a caller of the API.
    Only a label for the security team's alerts: never a basis for a decision."""
    agent = request.headers.get("User-Agent", "")
    return Via.CLI if agent.startswith(CLI_USER_AGENT) else Via.API


async def create_request(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    body = await json_body(request)
    resources = _resources_field(body)
    actions = body.get("actions", ["read"])
    if isinstance(actions, str):
        actions = [actions]
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise Problem(400, "invalid_body", "'actions' must be a list of strings, e.g. [\"read\"]")
    break_glass = body.get("break_glass", False)
    if not isinstance(break_glass, bool):
        raise Problem(400, "invalid_body", "'break_glass' must be true or false")
    if len(resources) > 1 and break_glass:
        raise Problem(400, "invalid_body", "break-glass is for one resource at a time, not a bundle")
    budget = budget_field(body)
    if len(resources) > 1 and budget is not None:
        raise Problem(400, "invalid_body", "a budget is for one resource at a time, not a bundle")
    if len(resources) > 1:
        outcome = await request_bundle(
            workflow,
            caller(request),
            resources,
            actions,
            text_field(body, "duration") or None,
            text_field(body, "justification"),
            ticket=text_field(body, "ticket"),
            starts_at=moment_field(body, "starts_at"),
            via=asked_via(request),
        )
    else:
        outcome = await workflow.request_access(
            caller(request),
            resources[0],
            actions,
            text_field(body, "duration") or None,
            text_field(body, "justification"),
            break_glass=break_glass,
            ticket=text_field(body, "ticket"),
            starts_at=moment_field(body, "starts_at"),
            budget=budget,
            accept_terms=text_field(body, "accept_terms"),
            via=asked_via(request),
        )
    return web.json_response(
        outcome_to_json(outcome, workflow.now()),
        status=201,
        headers={"Location": f"/api/v1/requests/{outcome.request.id}"},
    )


async def list_requests(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    found = await workflow.list_requests(
        caller(request),
        status=_status_query(request),
        requester=request.query.get("requester") or None,
        approvable=bool(_bool_query(request, "approvable")),
    )
    return web.json_response({"requests": [request_to_json(r) for r in found]})


async def get_request(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    viewer = caller(request)
    found = await workflow.get_request(request.match_info["id"], viewer)
    body = request_to_json(found)
    # What the approver needs to decide (groups, prefix size, past use, overlapping access).
    context = request.app.get(APPROVER_CONTEXT)
    shown = context is not None and approver_context.shown_to(found, viewer.name)
    body["context"] = await context.of(found) if context is not None and shown else None
    return web.json_response(body)


async def approve_request(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    body = await json_body(request, required=False)
    outcome = await workflow.approve(request.match_info["id"], caller(request), text_field(body, "comment"))
    return web.json_response(outcome_to_json(outcome, workflow.now()))


async def deny_request(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    body = await json_body(request, required=False)
    denied = await workflow.deny(request.match_info["id"], caller(request), text_field(body, "comment"))
    return web.json_response(request_to_json(denied))


async def cancel_request(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    body = await json_body(request, required=False)
    reason = text_field(body, "reason") or text_field(body, "comment")
    cancelled = await workflow.cancel(request.match_info["id"], caller(request), reason)
    return web.json_response(request_to_json(cancelled))


async def review_request(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    body = await json_body(request, required=False)
    reviewed = await workflow.review(request.match_info["id"], caller(request), text_field(body, "comment"))
    return web.json_response(request_to_json(reviewed))


async def list_grants(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    found = await workflow.list_grants(
        caller(request),
        principal=request.query.get("principal") or None,
        active=_bool_query(request, "active"),
    )
    now = workflow.now()
    usage = await usage_of(workflow.store, found)
    return web.json_response({"grants": [grant_to_json(g, now, usage.get(g.id)) for g in found]})


async def get_grant(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    grant = await workflow.get_grant(request.match_info["id"], caller(request))
    usage = await usage_of(workflow.store, [grant])
    return web.json_response(grant_to_json(grant, workflow.now(), usage.get(grant.id)))


async def revoke_grant(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    body = await json_body(request, required=False)
    reason = text_field(body, "reason") or request.query.get("reason", "")[:MAX_TEXT]
    grant = await workflow.revoke(request.match_info["id"], caller(request), reason)
    return web.json_response(grant_to_json(grant, workflow.now()))


async def extend(request: web.Request) -> web.Response:
    """More time on a grant, starting where it ends: answered like a new request."""
    workflow = request.app[WORKFLOW]
    body = await json_body(request)
    duration = text_field(body, "duration")
    if not duration:
        raise Problem(400, "invalid_body", "'duration' is required, e.g. \"2h\"")
    grant_id = request.match_info["id"]
    outcome = await extend_grant(
        workflow,
        grant_id,
        caller(request),
        duration,
        text_field(body, "justification"),
        via=asked_via(request),
    )
    return web.json_response(
        outcome_to_json(outcome, workflow.now()),
        status=201,
        headers={"Location": f"/api/v1/requests/{outcome.request.id}"},
    )


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/openapi.json", openapi),
    ("GET", "/whoami", whoami),
    ("GET", "/resources", list_resources),
    ("POST", "/requests", create_request),
    ("GET", "/requests", list_requests),
    ("GET", "/requests/{id}", get_request),
    ("POST", "/requests/{id}/approve", approve_request),
    ("POST", "/requests/{id}/deny", deny_request),
    ("POST", "/requests/{id}/cancel", cancel_request),
    ("POST", "/requests/{id}/review", review_request),
    ("GET", "/grants", list_grants),
    ("GET", "/grants/{id}", get_grant),
    ("DELETE", "/grants/{id}", revoke_grant),
    ("POST", "/grants/{id}/extend", extend),
)


def api_app(workflow: Workflow, approver_context: ApproverContext | None = None) -> web.Application:
    """The /api/v1 sub-application; mount it with `app.add_subapp("/api/v1", api_app(workflow))`."""
    app = web.Application(middlewares=[problems, authenticate])
    app[WORKFLOW] = workflow
    if approver_context is not None:
        app[APPROVER_CONTEXT] = approver_context
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
