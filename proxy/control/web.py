"""The web pages: request access (the page a gateway 403 links to), my access, the approver's inbox,
and active grants. Server-rendered HTML over the workflow service; no scripts, no build step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import structlog
from aiohttp import web

from proxy.access import policy as rules
from proxy.access.budgets import Usage
from proxy.access.durations import format_duration, parse_duration
from proxy.access.grants import Action, Grant, parse_resource
from proxy.access.policy import Resource, ResourcePath, Rule
from proxy.access.requests import RequestStatus, Via
from proxy.access.terms import terms_sha256
from proxy.audit.records import Usage as AuditUsage
from proxy.control import signin, web_audit, web_extend, web_reviews
from proxy.control.approver_context import APPROVER_CONTEXT
from proxy.control.trail import TRAIL
from proxy.control.web_settings import WebSettings
from proxy.control.webcore import (
    STATIC,
    WEB,
    Visit,
    WebContext,
    new_context,
    page,
    redirect,
    render,
    safe_next,
)
from proxy.identity.principals import Principal
from proxy.workflow.budgets import usage_of
from proxy.workflow.service import Workflow, WorkflowError

log = structlog.get_logger("grantgate.web")

T = TypeVar("T")

# Offered in the duration menu, up to the rule's maximum (which is always offered itself).
DURATION_CHOICES = tuple(
    parse_duration(d) for d in ("15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "3d", "7d", "14d", "30d")
)


@dataclass(frozen=True, slots=True)
class RequestForm:
    """What the request page shows for one resource, as seen by one requester (pure)."""

    resource: Resource
    path: ResourcePath
    rules: tuple[Rule, ...]  # the resource's rules that admit the requester, config order
    actions: tuple[Action, ...]
    durations: tuple[timedelta, ...]
    default_duration: timedelta
    instant: bool
    approvals_required: int
    approver_groups: tuple[str, ...]
    justification_required: bool
    justification_min_length: int
    break_glass: bool
    terms_sha256: str  # of the resource's dataset terms ("" without): the form sends it back once accepted


def request_form(
    resource: Resource, path: ResourcePath, admitting: tuple[Rule, ...], who: Principal
) -> RequestForm:
    first = admitting[0]
    longest = max(r.max_duration for r in admitting)
    durations = tuple(
        sorted({d for d in DURATION_CHOICES if d < longest} | {longest, first.default_duration})
    )
    ordered = [a for a in Action if any(a in r.actions for r in admitting)]
    return RequestForm(
        resource=resource,
        path=path,
        rules=admitting,
        actions=tuple(ordered),
        durations=durations,
        default_duration=first.default_duration,
        instant=rules.in_groups(who, first.instant_groups) or first.approvals_required == 0,
        approvals_required=max(first.approvals_required, 1),
        approver_groups=tuple(sorted(first.approver_groups)),
        justification_required=first.justification_required,
        justification_min_length=first.justification_min_length if first.justification_required else 0,
        break_glass=any(r.break_glass for r in admitting),
        terms_sha256=terms_sha256(resource.terms) if resource.terms else "",
    )


@dataclass(frozen=True, slots=True)
class Located:
    """Where a `resource` query points in the policy: the denied object and the area containing it."""

    asked: str
    resource: Resource | None
    path: ResourcePath | None
    problem: str = ""


def locate(policy: rules.Policy, asked: str) -> Located:
    text = asked.strip()
    if not text:
        return Located("", None, None)
    if not text.startswith("s3://"):
        named = policy.resource(text)
        if named is None:
            return Located(text, None, None, f"there is no resource named {text!r} in the access policy")
        return Located(text, named, named.paths[0])
    try:
        bucket, key = parse_resource(text)
    except ValueError as exc:
        return Located(text, None, None, str(exc))
    matched = policy.match(bucket, policy.canonical_prefix(bucket, key))
    if matched is None:
        return Located(text, None, None, f"no resource in the access policy contains {text}")
    return Located(text, matched[0], matched[1])


def _admitting(workflow: Workflow, resource: Resource, who: Principal) -> tuple[Rule, ...]:
    return tuple(r for r in workflow.policy.rules_for(resource.name) if r.admits(who))


# --- request access ---------------------------------------------------------------------------------


async def _request_page(
    ctx: WebContext,
    visit: Visit,
    asked: str,
    action: str,
    *,
    values: dict[str, object] | None = None,
    error: str = "",
    status: int = 200,
) -> web.Response:
    workflow = ctx.workflow
    who = visit.principal
    assert who is not None
    located = locate(workflow.policy, asked)
    form = None
    problem = located.problem
    covering: tuple[Grant, ...] = ()
    if located.resource is not None and located.path is not None:
        admitting = _admitting(workflow, located.resource, who)
        if admitting:
            form = request_form(located.resource, located.path, admitting, who)
            mine = await workflow.list_grants(who, principal=who.name, active=True)
            wanted = frozenset({Action(action)}) if action in {a.value for a in Action} else frozenset()
            covering = rules.covering_grants(
                mine,
                who.name,
                located.path.bucket,
                _prefix_of(located),
                wanted or frozenset({Action.READ}),
                visit.now,
            )
        else:
            refusal = rules.select_rule(workflow.policy, located.resource, who, frozenset())
            problem = refusal.message if isinstance(refusal, rules.Rejected) else "not requestable"
    catalogue = workflow.policy.requestable_by(who)
    defaults: dict[str, object] = {
        "resource": str(located.path) if located.path is not None else asked,
        "actions": [action] if form is not None and action in {a.value for a in form.actions} else ["read"],
        "duration": format_duration(form.default_duration) if form is not None else "",
        "justification": "",
        "break_glass": False,
    }
    if values:
        defaults.update(values)
    return render(
        ctx,
        visit,
        "request.html",
        status=status,
        title="Request access",
        nav="request",
        located=located,
        form=form,
        problem=problem,
        error=error,
        covering=covering,
        catalogue=catalogue,
        values=defaults,
        format_duration=format_duration,
    )


def _prefix_of(located: Located) -> str:
    """The object the gateway refused (its key), or the area's prefix when the link named the area."""
    assert located.path is not None
    if located.asked.startswith("s3://"):
        try:
            return parse_resource(located.asked)[1]
        except ValueError:
            pass
    return located.path.prefix


@page()
async def request_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    asked = request.query.get("resource", "")[:2000]
    action = request.query.get("action", "read")[:20].lower()
    return await _request_page(ctx, visit, asked, action)


@page()
async def submit_request(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    who = visit.principal
    assert who is not None
    resource = visit.field("resource")[:2000]
    actions = visit.fields("actions")
    duration = visit.field("duration")[:20]
    justification = visit.field("justification")[:4000]
    break_glass = visit.field("break_glass") == "on"
    # The hash of the terms the page showed, sent only when the box saying they are accepted is ticked.
    accept_terms = visit.field("terms_sha256")[:64] if visit.field("accept_terms") == "on" else ""
    try:
        outcome = await ctx.workflow.request_access(
            who,
            resource,
            actions,
            duration or None,
            justification,
            break_glass=break_glass,
            accept_terms=accept_terms,
            via=Via.WEB,
        )
    except WorkflowError as exc:
        values = {
            "resource": resource,
            "actions": actions,
            "duration": duration,
            "justification": justification,
            "break_glass": break_glass,
        }
        action = actions[0] if actions else "read"
        # A resource outside the policy has no form of its own: show the one it was typed into again.
        area = visit.field("area")[:2000]
        shown = resource if locate(ctx.workflow.policy, resource).resource is not None or not area else area
        return await _request_page(ctx, visit, shown, action, values=values, error=exc.message, status=422)
    made = outcome.request
    if outcome.grant is not None:
        visit.flash("success", f"Access granted: {outcome.message}.")
    else:
        visit.flash("success", f"Request {made.id} submitted: {outcome.message}.")
    return redirect(f"/access#{made.id}")


# --- my access --------------------------------------------------------------------------------------


@page()
async def my_access(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    who = visit.principal
    assert who is not None
    workflow = ctx.workflow
    requests = await workflow.list_requests(who, requester=who.name, limit=50)
    grants = await workflow.list_grants(who, principal=who.name, active=None)
    active = [g for g in grants if g.is_active(visit.now)]
    ended = sorted(
        (g for g in grants if not g.is_active(visit.now)),
        key=lambda g: g.revoked_at or g.expires_at or g.created_at,
        reverse=True,
    )[:10]
    return render(
        ctx,
        visit,
        "access.html",
        title="My access",
        nav="access",
        requests=requests,
        active=sorted(active, key=lambda g: g.created_at, reverse=True),
        ended=ended,
        resource_names=_grant_resources(workflow, grants),
        usage=await _usage(workflow, active),
        used=await _used(request, active),
    )


def _grant_resources(workflow: Workflow, grants: list[Grant]) -> dict[str, str]:
    out = {}
    for grant in grants:
        found = rules.resource_of_grant(workflow.policy, grant)
        out[grant.id] = found.name if found is not None else ""
    return out


async def _usage(workflow: Workflow, grants: list[Grant]) -> dict[str, Usage]:
    """What each budgeted grant has moved so far (unspent budgets read as nothing used yet)."""
    found = await usage_of(workflow.store, grants)
    return {g.id: found.get(g.id, Usage()) for g in grants if g.budget is not None}


async def _used(request: web.Request, grants: list[Grant]) -> dict[str, AuditUsage] | None:
    """What every grant has moved so far, budgeted or not, from the audit trail's usage counters (None
    when this gateway keeps no audit store)."""
    trail = request.app.get(TRAIL)
    return None if trail is None else await trail.usages(grants)


def _step(
    pick: Callable[[Workflow], Callable[[str, Principal, str], Awaitable[T]]],
    note: str,
    done: Callable[[str, T], str],
    back: Callable[[Visit], str],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A form post that takes one workflow step on the request or grant in the URL, then flashes."""

    @page()
    async def handler(request: web.Request, visit: Visit) -> web.StreamResponse:
        subject_id = request.match_info["id"]
        who = visit.principal
        assert who is not None
        target = back(visit)  # a bad return address is refused before the step is taken
        try:
            result = await pick(request.app[WEB].workflow)(subject_id, who, visit.field(note)[:2000])
        except WorkflowError as exc:
            visit.flash("error", exc.message)
        else:
            visit.flash("success", done(subject_id, result))
        return redirect(target)

    return handler


def _back_to_access(visit: Visit) -> str:
    return safe_next(visit.field("next") or "/access")


def _back_to_inbox(_visit: Visit) -> str:
    return "/inbox"


cancel_request = _step(
    lambda w: w.cancel, "reason", lambda rid, _r: f"Request {rid} cancelled.", _back_to_access
)
revoke_grant = _step(
    lambda w: w.revoke,
    "reason",
    lambda gid, _g: f"Grant {gid} revoked: it stops working on the very next request.",
    _back_to_access,
)


# --- approver's inbox -------------------------------------------------------------------------------


@page()
async def inbox(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    who = visit.principal
    assert who is not None
    waiting = await ctx.workflow.inbox(who)
    visible = await ctx.workflow.list_requests(who, limit=200)
    to_review = [r for r in visible if r.needs_review and r.requester != who.name]
    decided = [
        r
        for r in visible
        if r.status is not RequestStatus.PENDING and r.requester != who.name and not r.break_glass
    ][:10]
    # What each decision needs (groups, prefix size, past use, access held): the same lines as the CLI and
    # the Slack card show.
    approver_context = request.app.get(APPROVER_CONTEXT)
    contexts: dict[str, list[str]] = {}
    if approver_context is not None:
        found = await asyncio.gather(*(approver_context.lines(r) for r in waiting), return_exceptions=True)
        for r, lines in zip(waiting, found, strict=True):
            if isinstance(lines, BaseException):
                # The decision matters more than its context: the card goes without it.
                log.warning("approver_context_failed", request_id=r.id, error=repr(lines))
            else:
                contexts[r.id] = lines
    return render(
        ctx,
        visit,
        "inbox.html",
        title="Inbox",
        nav="inbox",
        waiting=waiting,
        contexts=contexts,
        to_review=to_review,
        decided=decided,
    )


approve_request = _step(
    lambda w: w.approve, "comment", lambda rid, outcome: f"{rid}: {outcome.message}.", _back_to_inbox
)
deny_request = _step(lambda w: w.deny, "comment", lambda rid, _r: f"Request {rid} denied.", _back_to_inbox)
review_request = _step(
    lambda w: w.review, "comment", lambda rid, _r: f"Break-glass request {rid} reviewed.", _back_to_inbox
)


# --- active grants ----------------------------------------------------------------------------------


@page()
async def active_grants(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    who = visit.principal
    assert who is not None
    grants = await ctx.workflow.list_grants(who, active=True)
    grants.sort(key=lambda g: (g.expires_at is None, g.expires_at or g.created_at))
    return render(
        ctx,
        visit,
        "grants.html",
        title="Active grants",
        nav="grants",
        grants=grants,
        resource_names=_grant_resources(ctx.workflow, grants),
        usage=await _usage(ctx.workflow, grants),
        used=await _used(request, grants),
    )


@page()
async def home(request: web.Request, visit: Visit) -> web.StreamResponse:
    return redirect("/access")


def install(
    app: web.Application,
    workflow: Workflow,
    settings: WebSettings,
    *,
    server_key: bytes,
    public_url: str,
    resolve: Callable[[str], Path],
) -> WebContext:
    """Add the web pages and sign-in routes to the control application."""
    ctx = new_context(workflow, settings, server_key, public_url, resolve)
    app[WEB] = ctx

    async def close_oidc(_app: web.Application) -> None:
        if ctx.oidc is not None:
            await ctx.oidc.close()

    app.on_cleanup.append(close_oidc)
    app.router.add_get("/", home)
    app.router.add_get("/request", request_page)
    app.router.add_post("/request", submit_request)
    app.router.add_get("/access", my_access)
    app.router.add_post("/requests/{id}/cancel", cancel_request)
    app.router.add_post("/requests/{id}/approve", approve_request)
    app.router.add_post("/requests/{id}/deny", deny_request)
    app.router.add_post("/requests/{id}/review", review_request)
    app.router.add_get("/inbox", inbox)
    app.router.add_get("/grants", active_grants)
    app.router.add_post("/grants/{id}/revoke", revoke_grant)
    web_extend.install(app)
    web_audit.install(app)
    web_reviews.install(app)
    app.router.add_static("/static", STATIC)
    signin.install(app)
    return ctx
