"""The OpenAPI 3.1 document of /api/v1, written by hand so it reads as documentation (pure)."""

from __future__ import annotations

from typing import Any

from proxy.access.grants import Action
from proxy.access.requests import RequestStatus
from proxy.access.reviews import ReviewStatus

VERSION = "1.0.0"

_ACTIONS = {"type": "string", "enum": [a.value for a in Action]}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    described = {
        400: "Malformed body or query.",
        401: "Missing, unknown or revoked API token.",
        403: "The caller may not do this (e.g. approve their own request).",
        404: "No such request or grant, or not visible to the caller.",
        409: "The request is no longer pending, or this approver already approved it.",
        422: "Refused by the access policy (duration over the maximum, missing justification...).",
    }
    return {
        str(s): {
            "description": described[s],
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
        for s in statuses
    }


def _listing(field: str, schema: str) -> dict[str, Any]:
    """A response body that lists items of `schema` under `field`."""
    return {"type": "object", "properties": {field: {"type": "array", "items": _ref(schema)}}}


def _id_param(what: str) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": what}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _comment_body(field: str, description: str) -> dict[str, Any]:
    return {
        "required": False,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {field: {"type": "string", "maxLength": 2000}}},
            }
        },
        "description": description,
    }


def _schemas() -> dict[str, Any]:
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "properties": {
                "type": {
                    "type": "string",
                    "format": "uri",
                    "example": "urn:grantgate:problem:duration_too_long",
                },
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "code": {"type": "string", "description": "Stable machine-readable reason."},
            },
            "required": ["type", "title", "status", "detail", "code"],
        },
        "NewRequest": {
            "type": "object",
            "properties": {
                "resource": {
                    "type": "string",
                    "description": "s3://bucket/prefix inside a policy resource, or the name of a "
                    "resource that has one path.",
                    "example": "s3://secret-internal-model-archive/models/",
                },
                "actions": {"type": "array", "items": _ACTIONS, "default": ["read"]},
                "duration": {
                    "type": "string",
                    "description": "e.g. 30m, 2h, 1d, 1h30m. Default: the rule's default duration.",
                    "example": "2h",
                },
                "justification": {"type": "string", "maxLength": 2000},
                "break_glass": {
                    "type": "boolean",
                    "default": False,
                    "description": "Emergency access without approval where the policy allows it; always "
                    "alerted and reviewed afterwards. Needs a justification.",
                },
                "starts_at": {
                    **_TIME,
                    "description": "Scheduled access (RFC 3339): the grant is in force only from then, for "
                    "`duration`; it may be approved ahead. Omitted or past: from the approval.",
                    "example": "2025-06-01T22:00:00Z",
                },
                "ticket": {
                    "type": "string",
                    "maxLength": 200,
                    "description": "A ticket reference, e.g. ML-1234; required by some rules, which may "
                    "also give the pattern it must match. Shown to approvers and kept in the audit.",
                },
                "accept_terms": {
                    "type": "string",
                    "description": "The SHA-256 (hex) of the resource's dataset terms as shown to the "
                    "requester (`terms_sha256` of GET /resources); required when it has terms. Missing or "
                    "stale: 422 `terms_not_accepted` / `terms_changed` with `terms` and `terms_sha256`.",
                },
                "resources": {
                    "type": "array",
                    "items": {"type": "string"},
                    "maxItems": 20,
                    "description": "Instead of `resource`: a bundle (a model and its eval set). Each "
                    "resource's own rule must be satisfied; approvers see one request; the grants are "
                    "created together or not at all.",
                },
            },
            "oneOf": [{"required": ["resource"]}, {"required": ["resources"]}],
        },
        "Approval": {
            "type": "object",
            "properties": {"approver": {"type": "string"}, "at": _TIME, "comment": {"type": "string"}},
        },
        "AccessRequest": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in RequestStatus]},
                "requester": {"type": "string"},
                "resource": {"type": "string"},
                "resource_name": {"type": "string"},
                "bucket": {"type": "string"},
                "prefix": {"type": "string"},
                "actions": {"type": "array", "items": _ACTIONS},
                "duration": {"type": "string"},
                "duration_seconds": {"type": "integer"},
                "justification": {"type": "string"},
                "created_at": _TIME,
                "pending_until": {**_TIME, "description": "When the request expires if still pending."},
                "approvals_required": {"type": "integer"},
                "approvals": {"type": "array", "items": _ref("Approval")},
                "decided_by": {"type": ["string", "null"]},
                "decided_at": _TIME,
                "decision_comment": {"type": "string"},
                "grant_id": {"type": ["string", "null"]},
                "break_glass": {"type": "boolean"},
                "needs_review": {"type": "boolean"},
                "reviewed_by": {"type": ["string", "null"]},
                "reviewed_at": _TIME,
                "review_comment": {"type": "string"},
                "source_cidrs": {"type": "array", "items": {"type": "string"}},
                "starts_at": {**_TIME, "description": "Scheduled access: when the window starts."},
                "ticket": {"type": ["string", "null"]},
                "terms_accepted": {"oneOf": [_ref("TermsAcceptance"), {"type": "null"}]},
                "resources": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Every resource asked for: `resource` first, then a bundle's others.",
                },
                "grant_ids": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Once granted: every grant made, in `resources` order.",
                },
                "extends": {
                    "type": ["string", "null"],
                    "description": "An extension: the grant it extends (its window starts where that ends).",
                },
                "context": {
                    "type": ["object", "null"],
                    "description": "GET /requests/{id} of a pending request: what an approver needs to "
                    "decide. `groups` (the requester's), `prefixes` (objects and bytes under each prefix "
                    "asked for, from a cached, bounded listing; `complete` false means the counts are "
                    "lower bounds), `past_grants` (the requester's grants there, newest first, with "
                    "`bytes_read`, `bytes_written`, `last_used_at`), `past_grants_total`, and `overlapping` "
                    "(active or scheduled grants sharing an action). Null once decided.",
                },
            },
            "required": ["id", "status", "requester", "resource", "actions", "grant_id"],
        },
        "RequestOutcome": {
            "allOf": [
                _ref("AccessRequest"),
                {
                    "type": "object",
                    "properties": {
                        "grant": {"oneOf": [_ref("Grant"), {"type": "null"}]},
                        "already_granted": {
                            "type": "array",
                            "items": _ref("Grant"),
                            "description": "Active grants that already cover what was asked.",
                        },
                        "message": {"type": "string"},
                    },
                },
            ]
        },
        "Grant": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "principal": {"type": "string"},
                "resource": {"type": "string"},
                "bucket": {"type": "string"},
                "prefix": {"type": "string"},
                "actions": {"type": "array", "items": _ACTIONS},
                "created_at": _TIME,
                "expires_at": {**_TIME, "description": "null: standing access."},
                "revoked_at": _TIME,
                "source": {"type": "string"},
                "request_id": {"type": ["string", "null"]},
                "created_by": {"type": "string"},
                "revoked_by": {"type": ["string", "null"]},
                "revoke_reason": {"type": ["string", "null"]},
                "starts_at": {**_TIME, "description": "Scheduled access: not in force before this."},
                "active": {"type": "boolean"},
                "terms_accepted": {"oneOf": [_ref("TermsAcceptance"), {"type": "null"}]},
            },
            "required": ["id", "principal", "resource", "actions", "expires_at"],
        },
        "TermsAcceptance": {
            "type": "object",
            "description": "The dataset terms the requester accepted: who, the text, its SHA-256, when.",
            "properties": {
                "by": {"type": "string"},
                "sha256": {"type": "string"},
                "text": {"type": "string"},
                "at": _TIME,
            },
        },
        "Rule": {
            "type": "object",
            "description": "How the caller may request one resource.",
            "properties": {
                "resource": {"type": "string"},
                "description": {"type": "string"},
                "paths": {"type": "array", "items": {"type": "string"}},
                "actions": {"type": "array", "items": _ACTIONS},
                "default_duration": {"type": "string"},
                "max_duration": {"type": "string"},
                "justification_required": {"type": "boolean"},
                "justification_min_length": {"type": "integer"},
                "instant": {"type": "boolean", "description": "Granted without approval for the caller."},
                "approvals_required": {"type": "integer"},
                "approver_groups": {"type": "array", "items": {"type": "string"}},
                "terms": {"type": ["string", "null"], "description": "Dataset terms to accept, if any."},
                "terms_sha256": {"type": ["string", "null"]},
                "break_glass": {"type": "boolean"},
                "source_cidrs": {"type": "array", "items": {"type": "string"}},
                "ticket_required": {"type": "boolean"},
                "ticket_pattern": {"type": ["string", "null"]},
            },
        },
        "WhoAmI": {
            "type": "object",
            "properties": {
                "principal": {"type": "string"},
                "groups": {"type": "array", "items": {"type": "string"}},
                "admin": {"type": "boolean"},
                "approver_for": {"type": "array", "items": {"type": "string"}},
                "requestable": {"type": "array", "items": _ref("Rule")},
            },
        },
        "Resource": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "paths": {"type": "array", "items": {"type": "string"}},
                "requestable": {"type": "boolean"},
                "rule": {"oneOf": [_ref("Rule"), {"type": "null"}]},
            },
        },
        "Review": {
            "type": "object",
            "description": "A periodic review of long-held access (a resource's `review_every`).",
            "properties": {
                "id": {"type": "string"},
                "grant_id": {"type": "string"},
                "principal": {"type": "string", "description": "Who holds the access."},
                "resource_name": {"type": "string"},
                "resource": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in ReviewStatus]},
                "period_start": {**_TIME, "description": "When access began or was last confirmed."},
                "due_at": _TIME,
                "deadline": {**_TIME, "description": "Undecided by then, the grant is revoked."},
                "reminded_at": _TIME,
                "decided_by": {"type": ["string", "null"]},
                "decided_at": _TIME,
                "comment": {"type": ["string", "null"]},
                "reviewers": {"type": "array", "items": {"type": "string"}},
                "can_decide": {"type": "boolean"},
                "usage": {
                    "type": "object",
                    "description": "Use over the period under review (period_start to the decision or now).",
                    "properties": {
                        "requests": {"type": "integer"},
                        "objects_read": {"type": "integer"},
                        "bytes_read": {"type": "integer"},
                        "bytes_written": {"type": "integer"},
                        "first_used_at": _TIME,
                        "last_used_at": _TIME,
                        "used_in_period": {"type": "boolean"},
                        "grants": {"type": "array", "items": {"type": "string"}},
                        "partial": {
                            "type": "boolean",
                            "description": "More records than were read: the figures are a floor.",
                        },
                    },
                },
            },
        },
    }


def _reviews_paths() -> dict[str, Any]:
    review_id = _id_param("Review id, e.g. v_Abc123")
    return {
        "/api/v1/reviews": {
            "get": {
                "summary": "Reviews of long-held access you hold or review",
                "parameters": [
                    _query(
                        "status",
                        {"type": "string", "enum": [*(s.value for s in ReviewStatus), "all"]},
                        "Default open.",
                    )
                ],
                "responses": {"200": _json(_listing("reviews", "Review"), "Reviews."), **_problems(400, 401)},
            }
        },
        "/api/v1/reviews/{id}": {
            "get": {
                "summary": "One review, with the holder's use",
                "parameters": [review_id],
                "responses": {"200": _json(_ref("Review"), "The review."), **_problems(401, 404)},
            },
            "post": {
                "summary": "Confirm (access continues until the next review) or revoke (it ends now)",
                "description": "By a reviewer of the resource or an admin, never the holder; only while "
                "the review is open and its grace period has not ended.",
                "parameters": [review_id],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["decision"],
                                "properties": {
                                    "decision": {"type": "string", "enum": ["confirm", "revoke"]},
                                    "comment": {"type": "string", "maxLength": 2000},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("Review"), "The review as decided."),
                    **_problems(400, 401, 403, 404, 409, 422),
                },
            },
        },
    }


def _paths() -> dict[str, Any]:
    request_id = _id_param("Request id, e.g. r_Abc123")
    grant_id = _id_param("Grant id, e.g. g_Abc123")
    return {
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
        "/api/v1/whoami": {
            "get": {
                "summary": "The caller, their groups, and what they may request or approve",
                "responses": {"200": _json(_ref("WhoAmI"), "The caller."), **_problems(401)},
            }
        },
        "/api/v1/resources": {
            "get": {
                "summary": "The policy's resources and, for each, whether and how the caller may request it",
                "responses": {
                    "200": _json(
                        _listing("resources", "Resource"),
                        "Resources.",
                    ),
                    **_problems(401),
                },
            }
        },
        "/api/v1/requests": {
            "post": {
                "summary": "Request access",
                "description": "Granted at once (status `approved`, with `grant_id`) for instant "
                "groups, rules needing no approval and break-glass; otherwise `pending` until enough "
                "approvers approve.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewRequest")}},
                },
                "responses": {
                    "201": _json(_ref("RequestOutcome"), "The request as stored."),
                    **_problems(400, 401, 403, 422),
                },
            },
            "get": {
                "summary": "Requests visible to the caller, newest first",
                "description": "Own requests, requests for resources the caller approves, all for admins.",
                "parameters": [
                    _query(
                        "status",
                        {"type": "string", "enum": [s.value for s in RequestStatus]},
                        "Only this status.",
                    ),
                    _query("requester", {"type": "string"}, "Only this requester's."),
                    _query(
                        "approvable", {"type": "boolean"}, "Only pending requests the caller may approve now."
                    ),
                ],
                "responses": {
                    "200": _json(
                        _listing("requests", "AccessRequest"),
                        "Requests.",
                    ),
                    **_problems(400, 401),
                },
            },
        },
        "/api/v1/requests/{id}": {
            "get": {
                "summary": "One request",
                "parameters": [request_id],
                "responses": {"200": _json(_ref("AccessRequest"), "The request."), **_problems(401, 404)},
            }
        },
        "/api/v1/requests/{id}/approve": {
            "post": {
                "summary": "Approve (an approver group member, never the requester)",
                "description": "Each approver counts once; the approval that reaches the rule's number "
                "creates the grant, whose clock starts now.",
                "parameters": [request_id],
                "requestBody": _comment_body("comment", "Optional comment."),
                "responses": {
                    "200": _json(_ref("RequestOutcome"), "The request after the approval."),
                    **_problems(400, 401, 403, 404, 409),
                },
            }
        },
        "/api/v1/requests/{id}/deny": {
            "post": {
                "summary": "Deny (an approver of the resource or an admin)",
                "parameters": [request_id],
                "requestBody": _comment_body("comment", "Why, shown to the requester."),
                "responses": {
                    "200": _json(_ref("AccessRequest"), "The denied request."),
                    **_problems(400, 401, 403, 404, 409),
                },
            }
        },
        "/api/v1/requests/{id}/cancel": {
            "post": {
                "summary": "Cancel one's own pending request",
                "parameters": [request_id],
                "requestBody": _comment_body("reason", "Optional reason."),
                "responses": {
                    "200": _json(_ref("AccessRequest"), "The cancelled request."),
                    **_problems(400, 401, 403, 404, 409),
                },
            }
        },
        "/api/v1/requests/{id}/review": {
            "post": {
                "summary": "Review a break-glass request after the fact (an approver or an admin)",
                "parameters": [request_id],
                "requestBody": _comment_body("comment", "Review notes."),
                "responses": {
                    "200": _json(_ref("AccessRequest"), "The reviewed request."),
                    **_problems(400, 401, 403, 404, 409, 422),
                },
            }
        },
        "/api/v1/grants": {
            "get": {
                "summary": "Grants visible to the caller",
                "description": "Own grants, grants on resources the caller approves, all for admins.",
                "parameters": [
                    _query("principal", {"type": "string"}, "Only this principal's grants."),
                    _query(
                        "active", {"type": "boolean"}, "true: only active; false: only ended; absent: all."
                    ),
                ],
                "responses": {
                    "200": _json(
                        _listing("grants", "Grant"),
                        "Grants.",
                    ),
                    **_problems(400, 401),
                },
            }
        },
        "/api/v1/grants/{id}": {
            "get": {
                "summary": "One grant",
                "parameters": [grant_id],
                "responses": {"200": _json(_ref("Grant"), "The grant."), **_problems(401, 404)},
            },
            "delete": {
                "summary": "Revoke a grant (its holder, an approver of its resource, or an admin)",
                "description": "Effective on the gateway's next S3 request. Revoking twice is harmless.",
                "parameters": [grant_id, _query("reason", {"type": "string"}, "Why, for the audit trail.")],
                "responses": {
                    "200": _json(_ref("Grant"), "The revoked grant."),
                    **_problems(401, 403, 404),
                },
            },
        },
        "/api/v1/grants/{id}/extend": {
            "post": {
                "summary": "Extend a grant you hold",
                "description": "A request for `duration` more, starting where the grant ends (no gap, "
                "nothing shortened), decided by the policy as a new request; its maximum counts the whole "
                "span. The grant stays in force while the extension waits.",
                "parameters": [grant_id],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["duration"],
                                "properties": {
                                    "duration": {"type": "string", "examples": ["2h"]},
                                    "justification": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(_ref("RequestOutcome"), "The extension request as stored."),
                    **_problems(400, 401, 403, 404, 409, 422),
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "GrantGate access API",
            "version": VERSION,
            "description": "Request, approve and revoke time-bound access to S3 prefixes behind GrantGate. "
            "Authenticate with `Authorization: Bearer <token>` (`grantgate tokens create PRINCIPAL`). Errors "
            "are RFC 9457 problem details.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A GrantGate API token."}
            },
            "schemas": _schemas(),
        },
        "paths": {**_paths(), **_reviews_paths()},
    }
