"""The reviews page: long-held access up for its periodic review, each holder's use over the period, and a
reviewer's Confirm / Revoke (holders see the reviews of their own access, without the buttons)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.access.reviews import AccessReview, Decision, ReviewStatus
from proxy.control.webcore import WEB, Visit, page, redirect, render
from proxy.workflow.reviews import ReviewUse
from proxy.workflow.service import WorkflowError

RECENT = 10  # decided reviews shown under the open ones


@page()
async def reviews_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    ctx = request.app[WEB]
    who = visit.principal
    assert who is not None
    reviews = ctx.workflow.reviews
    waiting = await reviews.list_reviews(who)
    decided = [
        r
        for r in await reviews.list_reviews(who, status=None)
        if r.status not in (ReviewStatus.OPEN, ReviewStatus.LAPSED)
    ]
    decided.sort(key=lambda r: r.decided_at or r.created_at, reverse=True)
    usage: dict[str, ReviewUse] = {r.id: await reviews.usage(r) for r in waiting}
    return render(
        ctx,
        visit,
        "reviews.html",
        title="Reviews",
        nav="reviews",
        waiting=waiting,
        usage=usage,
        deciders={r.id for r in waiting if reviews.may_decide(r, who)},
        reviewers={r.id: ", ".join(reviews.reviewer_groups(r)) for r in waiting},
        decided=decided[:RECENT],
    )


def _decide(decision: Decision) -> Any:
    @page()
    async def handler(request: web.Request, visit: Visit) -> web.StreamResponse:
        who = visit.principal
        assert who is not None
        review_id = request.match_info["id"]
        try:
            review = await request.app[WEB].workflow.reviews.decide(
                review_id, who, decision, visit.field("comment")[:2000]
            )
        except WorkflowError as exc:
            visit.flash("error", exc.message)
        else:
            visit.flash("success", _done(review))
        return redirect("/reviews")

    return handler


def _done(review: AccessReview) -> str:
    if review.status is ReviewStatus.CONFIRMED:
        return f"{review.principal}'s access to {review.resource} is confirmed until the next review."
    return f"{review.principal}'s access to {review.resource} is revoked: it stops on the very next request."


def install(app: web.Application) -> None:
    app.router.add_get("/reviews", reviews_page)
    app.router.add_post("/reviews/{id}/confirm", _decide(Decision.CONFIRM))
    app.router.add_post("/reviews/{id}/revoke", _decide(Decision.REVOKE))
