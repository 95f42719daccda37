"""Signing in to the web pages: OpenID Connect, an SSO proxy's headers, or the demo's dev sign-in.

The dev sign-in lets anyone become anyone; it exists only when `[web] dev_login = true`.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from urllib.parse import quote

import structlog
from aiohttp import web

from proxy.control.oidc import SignInError
from proxy.control.webcore import (
    SIGN_IN_WINDOW,
    WEB,
    Visit,
    WebContext,
    page,
    redirect,
    render,
    safe_next,
    sign_in_as,
)
from proxy.control.websession import Session
from proxy.identity.principals import Principal

log = structlog.get_logger("grantgate.web")

CALLBACK = "/signin/oidc/callback"
PENDING_SECONDS = 600  # how long a sign-in at the provider may take


def redirect_uri(ctx: WebContext) -> str:
    return ctx.public_url + CALLBACK


async def _sign_in_page(
    ctx: WebContext, visit: Visit, next_path: str, *, error: str = "", status: int = 200
) -> web.Response:
    people: list[Principal] = []
    if visit.principal is None:
        # A new token for each sign-in form shown, so one from an older page or session is worthless.
        visit.session = replace(Session.fresh(visit.now, SIGN_IN_WINDOW), flashes=visit.session.flashes)
    if ctx.settings.dev_login:
        people = await ctx.workflow.store.list_principals()
    return render(
        ctx,
        visit,
        "signin.html",
        status=status,
        title="Sign in",
        next_path=next_path,
        error=error,
        people=people,
        oidc=ctx.settings.oidc if ctx.oidc is not None else None,
        headers=ctx.settings.trusted_headers,
    )


@page(signed_in=False)
async def sign_in(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    next_path = safe_next(request.query.get("next"))
    if visit.principal is not None:
        return redirect(next_path)
    if ctx.oidc is not None and not ctx.settings.dev_login and "retry" not in request.query:
        # The only way in: skip a page with a single button on it.
        return redirect("/signin/oidc?next=" + quote(next_path, safe=""))
    return await _sign_in_page(ctx, visit, next_path)


@page(signed_in=False)
async def dev_sign_in(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    if not ctx.settings.dev_login:
        raise web.HTTPNotFound()
    next_path = safe_next(visit.field("next"))
    name = visit.field("principal").strip()
    principal = await ctx.workflow.principal(name) if name else None
    if principal is None:
        return await _sign_in_page(ctx, visit, next_path, error=f"no principal named {name!r}", status=422)
    await sign_in_as(ctx, visit, principal, "dev")
    visit.flash("info", f"Signed in as {principal.name} (development sign-in).")
    log.info("web_signed_in", principal=principal.name, via="dev", remote=request.remote)
    return redirect(next_path)


@page(signed_in=False)
async def oidc_start(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    if ctx.oidc is None:
        raise web.HTTPNotFound()
    next_path = safe_next(request.query.get("next"))
    try:
        start = await ctx.oidc.start(redirect_uri(ctx))
    except SignInError as exc:
        return await _sign_in_page(ctx, visit, next_path, error=str(exc), status=502)
    visit.session = Session(
        csrf=visit.session.csrf,
        expires=int((visit.now + SIGN_IN_WINDOW).timestamp()),
        flashes=visit.session.flashes,
        pending={
            "state": start.state,
            "nonce": start.nonce,
            "verifier": start.verifier,
            "next": next_path,
            "until": str(int(visit.now.timestamp()) + PENDING_SECONDS),
        },
    )
    # The provider's page is another origin: allow this one navigation away from ours.
    return redirect(start.url)


@page(signed_in=False)
async def oidc_callback(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    if ctx.oidc is None:
        raise web.HTTPNotFound()
    pending = visit.session.pending
    next_path = safe_next(pending.get("next"))
    # The pending sign-in is used once, whatever happens next.
    visit.session = Session(csrf=visit.session.csrf, expires=visit.session.expires)
    state = request.query.get("state", "")
    if not pending or not _same(pending.get("state", ""), state):
        return await _sign_in_page(
            ctx,
            visit,
            next_path,
            error="this sign-in was not started here or has expired; try again",
            status=400,
        )
    if int(pending.get("until", "0")) < visit.now.timestamp():
        return await _sign_in_page(
            ctx, visit, next_path, error="the sign-in took too long; try again", status=400
        )
    if "error" in request.query:
        reason = request.query.get("error_description") or request.query["error"]
        return await _sign_in_page(
            ctx, visit, next_path, error=f"the identity provider said: {reason}", status=400
        )
    code = request.query.get("code", "")
    if not code:
        return await _sign_in_page(
            ctx, visit, next_path, error="the identity provider sent no code", status=400
        )
    try:
        identity = await ctx.oidc.finish(
            code, redirect_uri(ctx), pending["verifier"], pending["nonce"], visit.now
        )
        principal = await ctx.workflow.store.ensure_principal(identity.name, identity.groups, now=visit.now)
    except SignInError as exc:
        return await _sign_in_page(ctx, visit, next_path, error=str(exc), status=400)
    except ValueError as exc:
        return await _sign_in_page(
            ctx, visit, next_path, error=f"that identity cannot be used: {exc}", status=400
        )
    await sign_in_as(ctx, visit, principal, "oidc")
    log.info("web_signed_in", principal=principal.name, via="oidc", remote=request.remote)
    return redirect(next_path)


@page(signed_in=False)
async def sign_out(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    if visit.session.sid:
        await ctx.sessions.end(visit.session.sid, visit.now)
    visit.session = Session.fresh(visit.now, SIGN_IN_WINDOW).flash("info", "You are signed out.")
    visit.principal = None
    # Not straight back to the provider: its own session would sign the browser in again at once.
    return redirect("/signin?retry=1")


def _same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())


def install(app: web.Application) -> None:
    app.router.add_get("/signin", sign_in)
    app.router.add_post("/signin/dev", dev_sign_in)
    app.router.add_get("/signin/oidc", oidc_start)
    app.router.add_get(CALLBACK, oidc_callback)
    app.router.add_post("/signout", sign_out)
