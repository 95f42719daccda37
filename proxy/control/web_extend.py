"""The web form behind My access's Extend button: more time on a grant, starting where it ends."""

from __future__ import annotations

from aiohttp import web

from proxy.access.durations import format_duration
from proxy.access.requests import Via
from proxy.control.webcore import WEB, Visit, page, redirect, safe_next
from proxy.workflow.extend import extend_grant
from proxy.workflow.service import WorkflowError


@page()
async def extend(request: web.Request, visit: Visit) -> web.StreamResponse:
    grant_id = request.match_info["id"]
    who = visit.principal
    assert who is not None
    target = safe_next(visit.field("next") or "/access")  # refused before the step is taken
    duration = visit.field("duration").strip()
    try:
        if not duration:
            raise _missing()
        outcome = await extend_grant(
            request.app[WEB].workflow,
            grant_id,
            who,
            duration,
            visit.field("justification")[:2000],
            via=Via.WEB,
        )
    except WorkflowError as exc:
        visit.flash("error", exc.message)
    else:
        if outcome.grant is not None and outcome.grant.expires_at is not None:
            end = outcome.grant.expires_at.strftime("%Y-%m-%d %H:%M UTC")
            visit.flash(
                "success",
                f"Grant {grant_id} extended by {format_duration(outcome.request.duration)}: "
                f"access now runs until {end} ({outcome.grant.id}).",
            )
        else:
            visit.flash("success", f"Extension {outcome.request.id} sent for approval: {outcome.message}.")
    return redirect(target)


def _missing() -> WorkflowError:
    return WorkflowError("invalid_duration", "Say how much longer, e.g. 2h.")


def install(app: web.Application) -> None:
    app.router.add_post("/grants/{id}/extend", extend)
