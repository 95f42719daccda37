"""What every web page shares: the session, who is signed in, CSRF checks, templates and redirects.

A page handler is wrapped by `page()`, which loads the session cookie (or believes an SSO proxy's
identity headers, when configured), refuses a state-changing request without the session's CSRF
token, sends strangers to the sign-in page, and writes the session back when it changed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import structlog
from aiohttp import web
from markupsafe import Markup, escape
from multidict import MultiDictProxy

from proxy.access.budgets import describe, format_size
from proxy.access.context import size_text
from proxy.control import csrf, humanize
from proxy.control.oidc import OidcClient
from proxy.control.web_settings import TrustedHeaderSettings, WebSettings
from proxy.control.websession import Session, decode, encode, session_key
from proxy.identity.principals import Principal
from proxy.identity.trust import is_workload_name
from proxy.store.web_sessions import WebSessionStore
from proxy.workflow.service import Workflow

log = structlog.get_logger("grantgate.web")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
MAX_FORM = 64 * 1024
# How long a visitor who is not signed in keeps one CSRF token: the sign-in form's token is at most this
# old, and the sign-in page hands out a new one each time it is shown.
SIGN_IN_WINDOW = timedelta(minutes=15)

# Pages are self-contained: no scripts at all, styles from our own origin, never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class WebContext:
    workflow: Workflow
    settings: WebSettings
    key: bytes
    public_url: str
    oidc: OidcClient | None
    templates: jinja2.Environment
    sessions: WebSessionStore

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def lifetime(self) -> timedelta:
        return timedelta(hours=self.settings.session_hours)


WEB = web.AppKey("web", WebContext)


@dataclass
class Visit:
    """One page view: the session as loaded (and as it should be written back) and the principal."""

    session: Session
    loaded: Session | None
    principal: Principal | None
    now: datetime
    form: MultiDictProxy[Any] | None = None
    inbox_count: int | None = None  # for the navigation badge; None when not an approver
    extra_headers: dict[str, str] = field(default_factory=dict)

    def flash(self, kind: str, text: str) -> None:
        self.session = self.session.flash(kind, text)

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name, default) if self.form is not None else default
        return value if isinstance(value, str) else default

    def fields(self, name: str) -> list[str]:
        if self.form is None:
            return []
        return [v for v in self.form.getall(name, []) if isinstance(v, str)]


Handler = Callable[[web.Request, Visit], Awaitable[web.StreamResponse]]


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ts"] = humanize.timestamp
    env.filters["path"] = breakable_path
    env.filters["budget"] = describe
    env.filters["bytes"] = size_text
    env.filters["size"] = format_size
    return env


def breakable_path(value: object) -> Markup:
    """An s3:// path that may wrap after a slash rather than mid-word."""
    return Markup("/<wbr>").join(escape(part) for part in str(value).split("/"))


class BadRequest(Exception):
    """A request the page cannot serve as sent: answered 400 with this message."""


# What a return address may hold: printable ASCII but the backslash. Browsers (the WHATWG URL parser)
# drop tabs and newlines anywhere and read "\" as "/", so "/\t/evil.example" or "/\\evil.example" is
# "//evil.example", another site; control characters would also break the Location header itself.
_LOCAL_PATH = re.compile(r"/(?![/\\])[\x21-\x5b\x5d-\x7e]*")


def safe_next(value: str | None) -> str:
    """The local path to return to after sign-in ("/" when none is given); BadRequest for anything a
    browser could resolve to another origin. Pure.

    Only "/" followed by something other than "/" is accepted: never a scheme, an authority ("//host")
    or a relative path, so an open redirect cannot hand phishers a trusted link.
    """
    if not value:
        return "/"
    if _LOCAL_PATH.fullmatch(value) is None:
        raise BadRequest("the address to return to after signing in is not a path on this site")
    return value


def redirect(location: str) -> web.Response:
    # 303: after a POST the browser follows with a GET, so a reload never resubmits the form.
    return web.Response(status=303, headers={"Location": location})


def sign_in_redirect(request: web.Request) -> web.Response:
    return redirect("/signin?next=" + quote(request.path_qs, safe=""))


def peer_is_trusted(remote: str | None, settings: TrustedHeaderSettings) -> bool:
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in settings.proxies)


def header_identity(
    headers: Any, remote: str | None, settings: TrustedHeaderSettings
) -> tuple[str, tuple[str, ...] | None] | None:
    """(name, groups or None) from an SSO proxy's headers, only when that is on and the peer is trusted."""
    if not settings.enabled:
        return None
    name = (headers.get(settings.user_header) or "").strip()
    if not name:
        return None
    if not peer_is_trusted(remote, settings):
        log.warning("identity_headers_ignored", remote=remote, reason="peer is not a trusted proxy")
        return None
    if is_workload_name(name):
        log.warning("identity_headers_ignored", remote=remote, reason="a workload principal's name")
        return None
    raw = headers.get(settings.groups_header)
    if raw is None:
        return name, None
    return name, tuple(sorted({g.strip() for g in raw.split(",") if g.strip()}))


async def sign_in_as(ctx: WebContext, visit: Visit, principal: Principal, via: str) -> None:
    """Start a signed-in session for `principal`, recorded in the store so it can be ended there."""
    expires = visit.now + ctx.lifetime
    sid = await ctx.sessions.open(principal.name, via, now=visit.now, expires=expires)
    visit.session = visit.session.signed_in(principal.name, via, visit.now, ctx.lifetime, sid)
    visit.principal = principal


async def load_visit(ctx: WebContext, request: web.Request) -> Visit:
    now = ctx.workflow.now()
    loaded = decode(request.cookies.get(ctx.settings.cookie_name), ctx.key, now)
    session = loaded or Session.fresh(now, SIGN_IN_WINDOW)
    principal = None
    from_headers = header_identity(request.headers, request.remote, ctx.settings.trusted_headers)
    if from_headers is not None:
        name, groups = from_headers
        principal = await _header_principal(ctx, name, groups)
        if principal is not None and (session.user != name or session.via != "headers"):
            session = session.signed_in(name, "headers", now, ctx.lifetime)
            log.info("web_signed_in", principal=name, via="headers", remote=request.remote)
    elif session.user is not None:
        principal = await ctx.workflow.principal(session.user)
        ended = session.via == "headers" or not await ctx.sessions.is_open(session.sid, session.user, now)
        if principal is None or ended:
            # Deleted since, signed out, its key revoked, or a header session arriving without its proxy.
            session = Session.fresh(now, SIGN_IN_WINDOW)
            principal = None
    return Visit(session, loaded, principal, now)


async def _header_principal(ctx: WebContext, name: str, groups: tuple[str, ...] | None) -> Principal | None:
    sync = groups if ctx.settings.trusted_headers.sync_groups else None
    stored = await ctx.workflow.principal(name)
    if stored is not None and (sync is None or stored.groups == frozenset(sync)):
        return stored
    try:
        return await ctx.workflow.store.ensure_principal(name, sync, now=ctx.workflow.now())
    except ValueError as exc:
        log.warning("identity_header_rejected", error=str(exc))
        return None


def save_visit(ctx: WebContext, visit: Visit, response: web.StreamResponse) -> None:
    for name, value in {**SECURITY_HEADERS, **visit.extra_headers}.items():
        response.headers.setdefault(name, value)
    if visit.loaded is not None and visit.session == visit.loaded:
        return
    response.set_cookie(
        ctx.settings.cookie_name,
        encode(visit.session, ctx.key),
        max_age=int(ctx.lifetime.total_seconds()),
        path="/",
        httponly=True,
        secure=ctx.secure_cookies,
        samesite=ctx.settings.cookie_samesite,
    )


def page(
    *, signed_in: bool = True
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    def wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            ctx = request.app[WEB]
            visit = await load_visit(ctx, request)
            response: web.StreamResponse
            if csrf.needs_check(request.method):
                visit.form = await request.post()
                if not csrf.token_matches(visit.session.csrf, visit.field(csrf.FIELD)):
                    log.warning("csrf_rejected", path=request.path, user=visit.session.user)
                    response = render(
                        ctx,
                        visit,
                        "error.html",
                        status=403,
                        title="Form expired",
                        message="This form was not sent from a current GrantGate page (missing or stale "
                        "security token). Go back, reload the page and try again.",
                    )
                    save_visit(ctx, visit, response)
                    return response
            if signed_in and visit.principal is None:
                response = sign_in_redirect(request)
            else:
                if request.method == "GET" and visit.principal is not None:
                    visit.inbox_count = await _inbox_count(ctx, visit.principal)
                try:
                    response = await handler(request, visit)
                except BadRequest as exc:
                    response = render(
                        ctx, visit, "error.html", status=400, title="Bad request", message=str(exc)
                    )
            save_visit(ctx, visit, response)
            return response

        run.__name__ = handler.__name__
        return run

    return wrap


async def _inbox_count(ctx: WebContext, principal: Principal) -> int | None:
    policy = ctx.workflow.policy
    if not (
        policy.is_admin(principal) or any(policy.is_approver_of(principal, r.name) for r in policy.resources)
    ):
        return None
    return len(await ctx.workflow.inbox(principal))


def render(ctx: WebContext, visit: Visit, template: str, *, status: int = 200, **values: Any) -> web.Response:
    """Render a page; flash messages queued so far are shown on it and then forgotten."""
    flashes = visit.session.flashes
    visit.session = visit.session.without_flashes()
    principal = visit.principal
    policy = ctx.workflow.policy
    is_admin = principal is not None and policy.is_admin(principal)
    approves = principal is not None and (
        is_admin or any(policy.is_approver_of(principal, r.name) for r in policy.resources)
    )
    now = visit.now
    values.setdefault("nav", "")
    html = ctx.templates.get_template(template).render(
        user=principal,
        via=visit.session.via,
        is_admin=is_admin,
        is_approver=approves,
        inbox_count=visit.inbox_count,
        csrf_token=visit.session.csrf,
        flashes=flashes,
        now=now,
        until=lambda moment: humanize.until(moment, now),
        ago=lambda moment: humanize.ago(moment, now),
        span=humanize.span,
        dev_login=ctx.settings.dev_login,
        **values,
    )
    return web.Response(text=html, status=status, content_type="text/html")


def client_secret(settings: WebSettings, resolve: Callable[[str], Path]) -> str:
    value = os.environ.get("GRANTGATE_OIDC_CLIENT_SECRET", "")
    if not value and settings.oidc.client_secret_file:
        value = resolve(settings.oidc.client_secret_file).read_text().strip()
    return value or settings.oidc.client_secret


def new_context(
    workflow: Workflow,
    settings: WebSettings,
    server_key: bytes,
    public_url: str,
    resolve: Callable[[str], Path],
) -> WebContext:
    oidc = None
    if settings.oidc.enabled:
        oidc = OidcClient(settings.oidc, client_secret(settings, resolve), resolve)
    return WebContext(
        workflow,
        settings,
        session_key(server_key),
        public_url,
        oidc,
        template_environment(),
        WebSessionStore(workflow.store),
    )
