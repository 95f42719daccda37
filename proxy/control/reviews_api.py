"""The reviews API under /api/v1/reviews: the periodic reviews of long-held access a caller may see, and a
reviewer's confirm or revoke.

Mounted into the /api/v1 sub-application, so its bearer-token authentication and problem+json errors
apply. A holder sees the reviews of their own access; reviewers (and admins) decide, never on their own.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.access.durations import iso
from proxy.access.reviews import AccessReview, ReviewStatus
from proxy.control.api import WORKFLOW, Problem, caller, json_body, text_field
from proxy.identity.principals import Principal
from proxy.workflow.reviews import Reviews
from proxy.workflow.service import Workflow


def review_to_json(review: AccessReview) -> dict[str, Any]:
    return {
        "id": review.id,
        "grant_id": review.grant_id,
        "principal": review.principal,
        "resource_name": review.resource_name,
        "resource": review.resource,
        "status": review.status.value,
        "period_start": iso(review.period_start),
        "due_at": iso(review.due_at),
        "deadline": iso(review.deadline),
        "reminded_at": iso(review.reminded_at),
        "decided_by": review.decided_by or None,
        "decided_at": iso(review.decided_at),
        "comment": review.comment or None,
    }


async def described(workflow: Workflow, review: AccessReview, viewer: Principal) -> dict[str, Any]:
    """A review as every surface shows it: with the holder's use and whether `viewer` may decide it."""
    reviews: Reviews = workflow.reviews
    return {
        **review_to_json(review),
        "reviewers": list(reviews.reviewer_groups(review)),
        "usage": (await reviews.usage(review)).as_dict(),
        "can_decide": reviews.may_decide(review, viewer),
    }


def _status(request: web.Request) -> ReviewStatus | None:
    value = request.query.get("status", ReviewStatus.OPEN.value)
    if value == "all":
        return None
    try:
        return ReviewStatus(value)
    except ValueError:
        known = ", ".join([*(s.value for s in ReviewStatus), "all"])
        raise Problem(400, "invalid_query", f"unknown status {value!r}; use one of {known}") from None


async def list_reviews(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    viewer = caller(request)
    found = await workflow.reviews.list_reviews(viewer, status=_status(request))
    return web.json_response({"reviews": [await described(workflow, r, viewer) for r in found]})


async def get_review(request: web.Request) -> web.Response:
    workflow = request.app[WORKFLOW]
    viewer = caller(request)
    review = await workflow.reviews.get_review(request.match_info["id"], viewer)
    return web.json_response(await described(workflow, review, viewer))


async def decide_review(request: web.Request) -> web.Response:
    """`{"decision": "confirm" | "revoke", "comment": "..."}`."""
    workflow = request.app[WORKFLOW]
    body = await json_body(request)
    decision = text_field(body, "decision")
    if not decision:
        raise Problem(400, "invalid_body", '\'decision\' is required: "confirm" or "revoke"')
    viewer = caller(request)
    review = await workflow.reviews.decide(
        request.match_info["id"], viewer, decision, text_field(body, "comment")
    )
    return web.json_response(await described(workflow, review, viewer))


ROUTES = (
    ("GET", "/reviews", list_reviews),
    ("GET", "/reviews/{id}", get_review),
    ("POST", "/reviews/{id}", decide_review),
)


def install(api: web.Application) -> None:
    """Add the review routes to the /api/v1 sub-application (before it is mounted)."""
    for method, path, handler in ROUTES:
        api.router.add_route(method, path, handler)
