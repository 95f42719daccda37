"""The /api/v1 JSON API on the control listener, served by aiohttp over a real SQLite store."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.policies import MODELS_RULE

from proxy.access.policy import Policy, Resource, ResourcePath
from proxy.control import reviews_api
from proxy.control.api import ROUTES
from proxy.control.app import control_app
from proxy.control.audit_api import audit_query
from proxy.control.openapi import openapi_document
from proxy.live_state import LiveState
from proxy.observe.events import EventBus
from proxy.store.sql import SqlStore
from proxy.workflow.service import Workflow

BUCKET = "archive"
WHY = "evaluate the new checkpoint"
POLICY = Policy(
    resources=(Resource("models", (ResourcePath(BUCKET, "models/"),), "Model weights"),),
    rules=(MODELS_RULE,),
    admin_groups=frozenset({"admins"}),
)


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    async def call(self, who: str | None, method: str, path: str, **kw: Any) -> tuple[int, Any, str]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        resp = await self.client.request(method, "/api/v1" + path, headers=headers, **kw)
        body = await resp.json(content_type=None) if await resp.read() else None
        return resp.status, body, resp.content_type


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'gg.db'}", upgrade=True)
    workflow = Workflow(store, POLICY, EventBus())
    tokens = {}
    for name, groups in {
        "alice": ["ml"],
        "bob": ["infra"],
        "carol": ["security"],
        "root": ["admins"],
    }.items():
        await store.ensure_principal(name, groups)
        _, tokens[name] = await workflow.requests.create_token(name, now=workflow.now())
    state = LiveState(store, b"k" * 32, interval=1, grace=1)
    async with TestClient(TestServer(control_app(state, workflow))) as client:
        yield Api(client, tokens)
    await store.close()


def assert_problem(status: int, body: Any, content_type: str, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert content_type == "application/problem+json"
    assert body["status"] == expected_status and body["code"] == code
    assert body["type"] == f"urn:grantgate:problem:{code}"
    assert body["title"] and body["detail"]


async def test_the_acceptance_journey(api: Api) -> None:
    status, created, _ = await api.call(
        "alice",
        "POST",
        "/requests",
        json={
            "resource": f"s3://{BUCKET}/models/",
            "actions": ["read"],
            "duration": "2h",
            "justification": WHY,
        },
    )
    assert status == 201
    assert created["status"] == "pending" and created["grant_id"] is None and created["id"].startswith("r_")
    status, listed, _ = await api.call("carol", "GET", "/requests?status=pending")
    assert status == 200 and [r["id"] for r in listed["requests"]] == [created["id"]]
    status, approved, _ = await api.call(
        "carol", "POST", f"/requests/{created['id']}/approve", json={"comment": "ok"}
    )
    assert status == 200 and approved["status"] == "approved" and approved["grant_id"]
    assert approved["grant"]["expires_at"] and approved["approvals"][0]["approver"] == "carol"
    status, grants, _ = await api.call("alice", "GET", "/grants?principal=alice&active=true")
    assert [g["id"] for g in grants["grants"]] == [approved["grant_id"]]
    assert grants["grants"][0]["active"] is True
    status, revoked, _ = await api.call("carol", "DELETE", f"/grants/{approved['grant_id']}")
    assert status == 200 and revoked["revoked_at"] and revoked["revoked_by"] == "carol"
    status, grants, _ = await api.call("alice", "GET", "/grants?principal=alice&active=true")
    assert grants["grants"] == []
    status, ended, _ = await api.call("alice", "GET", "/grants?active=false")
    assert [g["id"] for g in ended["grants"]] == [approved["grant_id"]]


async def test_instant_request_answers_approved_with_its_grant(api: Api) -> None:
    status, body, _ = await api.call(
        "bob",
        "POST",
        "/requests",
        json={"resource": f"s3://{BUCKET}/models/", "actions": ["read"], "justification": WHY},
    )
    assert status == 201 and body["status"] == "approved" and body["grant_id"] == body["grant"]["id"]
    assert body["duration"] == "2h"
    status, again, _ = await api.call(
        "bob",
        "POST",
        "/requests",
        json={"resource": f"s3://{BUCKET}/models/x/", "actions": ["read"], "justification": WHY},
    )
    assert [g["id"] for g in again["already_granted"]] == [body["grant_id"]]


async def test_deny_with_comment_and_cancel(api: Api) -> None:
    _, one, _ = await api.call(
        "alice", "POST", "/requests", json={"resource": f"s3://{BUCKET}/models/", "justification": WHY}
    )
    status, denied, _ = await api.call("carol", "POST", f"/requests/{one['id']}/deny", json={"comment": "no"})
    assert status == 200 and denied["status"] == "denied" and denied["decision_comment"] == "no"
    assert_problem(*await api.call("carol", "POST", f"/requests/{one['id']}/approve"), 409, "not_pending")
    _, two, _ = await api.call(
        "alice", "POST", "/requests", json={"resource": f"s3://{BUCKET}/models/", "justification": WHY}
    )
    status, cancelled, _ = await api.call("alice", "POST", f"/requests/{two['id']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    status, shown, _ = await api.call("alice", "GET", f"/requests/{two['id']}")
    assert shown["status"] == "cancelled"


async def test_whoami_and_resources_describe_the_caller(api: Api) -> None:
    status, me, _ = await api.call("bob", "GET", "/whoami")
    assert status == 200 and me["principal"] == "bob" and me["groups"] == ["infra"]
    assert me["admin"] is False and me["approver_for"] == []
    [rule] = me["requestable"]
    assert rule["resource"] == "models" and rule["instant"] is True and rule["max_duration"] == "8h"
    _, carol, _ = await api.call("carol", "GET", "/whoami")
    assert carol["approver_for"] == ["models"] and carol["requestable"] == []
    _, resources, _ = await api.call("carol", "GET", "/resources")
    assert resources["resources"][0]["requestable"] is False
    _, root, _ = await api.call("root", "GET", "/whoami")
    assert root["admin"] is True


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"resource": f"s3://{BUCKET}/models/", "duration": "3d", "justification": WHY},
            422,
            "duration_too_long",
        ),
        ({"resource": f"s3://{BUCKET}/models/"}, 422, "justification_missing"),
        ({"resource": f"s3://{BUCKET}/other/", "justification": WHY}, 422, "unknown_resource"),
        (
            {"resource": f"s3://{BUCKET}/models/", "actions": ["fly"], "justification": WHY},
            422,
            "invalid_actions",
        ),
        (
            {"resource": f"s3://{BUCKET}/models/", "actions": "read", "break_glass": "yes"},
            400,
            "invalid_body",
        ),
        ({"actions": ["read"]}, 400, "invalid_body"),
        ({"resource": 7}, 400, "invalid_body"),
    ],
)
async def test_refusals_are_problem_details(api: Api, body: dict[str, Any], status: int, code: str) -> None:
    assert_problem(*await api.call("alice", "POST", "/requests", json=body), status, code)


async def test_authorization_refusals(api: Api) -> None:
    _, created, _ = await api.call(
        "alice", "POST", "/requests", json={"resource": f"s3://{BUCKET}/models/", "justification": WHY}
    )
    assert_problem(
        *await api.call("alice", "POST", f"/requests/{created['id']}/approve"), 403, "self_approval"
    )
    assert_problem(
        *await api.call("bob", "POST", f"/requests/{created['id']}/approve"), 403, "not_an_approver"
    )
    assert_problem(*await api.call("bob", "GET", f"/requests/{created['id']}"), 404, "not_found")
    assert_problem(
        *await api.call(
            "alice",
            "POST",
            "/requests",
            json={"resource": f"s3://{BUCKET}/models/", "break_glass": True, "justification": WHY},
        ),
        403,
        "break_glass_not_allowed",
    )


async def test_authentication_is_required_and_checked(api: Api) -> None:
    resp = await api.client.get("/api/v1/whoami")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(resp.status, await resp.json(content_type=None), resp.content_type, 401, "unauthenticated")
    resp = await api.client.get(
        "/api/v1/whoami", headers={"Authorization": "Bearer ggt_0123456789abcdef_" + "A" * 43}
    )
    assert_problem(resp.status, await resp.json(content_type=None), resp.content_type, 401, "invalid_token")
    resp = await api.client.get("/api/v1/whoami", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert resp.status == 401


async def test_bad_input_and_unknown_routes_are_problem_details(api: Api) -> None:
    assert_problem(*await api.call("alice", "POST", "/requests", data=b"{not json"), 400, "invalid_body")
    assert_problem(*await api.call("alice", "POST", "/requests", json=["a list"]), 400, "invalid_body")
    assert_problem(*await api.call("alice", "GET", "/requests?status=maybe"), 400, "invalid_query")
    assert_problem(*await api.call("alice", "GET", "/grants?active=perhaps"), 400, "invalid_query")
    assert_problem(*await api.call("alice", "GET", "/nothing-here"), 404, "not_found")
    assert_problem(*await api.call("alice", "PUT", "/whoami"), 405, "method_not_allowed")
    assert_problem(*await api.call("alice", "DELETE", "/grants/g_missing"), 404, "not_found")


async def test_openapi_document_is_public_and_describes_every_route(api: Api) -> None:
    resp = await api.client.get("/api/v1/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"].startswith("3.")
    served = {(method.lower(), "/api/v1" + path) for method, path, _ in (*ROUTES, *reviews_api.ROUTES)}
    described = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert served == described
    # Every $ref points at a schema that exists.
    text = str(document)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in document["components"]["schemas"], name


def test_openapi_names_the_fields_the_acceptance_check_uses() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert {"resource", "actions", "duration", "justification"} <= set(schemas["NewRequest"]["properties"])
    assert {"id", "status", "grant_id"} <= set(schemas["AccessRequest"]["required"])


async def test_revoking_someone_elses_grant_says_it_is_not_yours(api: Api) -> None:
    _, bobs, _ = await api.call(
        "bob", "POST", "/requests", json={"resource": f"s3://{BUCKET}/models/", "justification": WHY}
    )
    status, body, _ = await api.call("alice", "DELETE", f"/grants/{bobs['grant_id']}")
    assert_problem(status, body, _, 403, "not_yours")
    assert f"grant {bobs['grant_id']} is not yours" in body["detail"]
    assert_problem(*await api.call("alice", "DELETE", "/grants/g_missing"), 404, "not_found")


async def test_an_unknown_resource_name_lists_the_known_names(api: Api) -> None:
    status, body, content_type = await api.call(
        "alice", "POST", "/requests", json={"resource": "modelz", "justification": WHY}
    )
    assert_problem(status, body, content_type, 422, "invalid_resource")
    assert "unknown resource 'modelz'" in body["detail"] and "(models)" in body["detail"]


def test_audit_limit_alone_asks_for_the_newest_events_and_after_pages_forward() -> None:
    now = datetime.now(UTC)
    assert audit_query({"limit": "10"}, now).latest is True
    assert audit_query({"limit": "10", "after": "42"}, now).latest is False
    assert audit_query({}, now).latest is False
