"""Budgets through the access workflow: a rule's default and maximum budget, a request naming its own,
and the grant JSON carrying the budget and what it has moved."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError
from support.access import api
from support.world import BUCKET, World, running_world

POLICY = f"""
[policy]
[policy.resources.weights]
paths = ["s3://{BUCKET}/weights/"]

[[policy.rules]]
resource = "weights"
actions = ["read"]
instant_groups = ["ml"]
justification_required = false
approver_groups = ["security"]
budget = {{ max_bytes = "1MiB", single_use = true }}
max_budget = {{ max_bytes = "4MiB" }}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("budget-world"), extra_config=POLICY) as w:
        yield w


def test_request_gets_the_rule_default_budget_and_its_grant_reports_usage(world: World) -> None:
    who = world.person("bob-budget", ("ml",))
    token = world.api_token(who)
    data = secrets.token_bytes(600_000)
    world.upstream().put_object(Bucket=BUCKET, Key="weights/a.bin", Body=data)

    status, made = api(world, token, "POST", "/requests", {"resource": f"s3://{BUCKET}/weights/"})
    assert status == 201, made
    assert made["grant"]["budget"] == {"max_bytes": 1024 * 1024, "max_objects": None, "single_use": True}
    assert made["grant"]["usage"] == {"bytes": 0, "objects": 0}

    s3 = world.client(who)
    assert s3.get_object(Bucket=BUCKET, Key="weights/a.bin")["Body"].read() == data
    with pytest.raises(ClientError):
        s3.get_object(Bucket=BUCKET, Key="weights/a.bin")  # single-use
    status, grant = api(world, token, "GET", f"/grants/{made['grant']['id']}")
    assert status == 200
    assert grant["usage"] == {"bytes": len(data), "objects": 1}


def test_request_may_ask_within_the_maximum_and_is_refused_beyond_it(world: World) -> None:
    who = world.person("carol-budget", ("ml",))
    token = world.api_token(who)
    asked = {"max_bytes": 2 * 1024 * 1024, "max_objects": 3}
    status, made = api(
        world, token, "POST", "/requests", {"resource": f"s3://{BUCKET}/weights/", "budget": asked}
    )
    assert status == 201, made
    assert made["budget"] == {**asked, "single_use": False}
    assert made["grant"]["budget"] == {**asked, "single_use": False}

    status, problem = api(
        world,
        token,
        "POST",
        "/requests",
        {"resource": f"s3://{BUCKET}/weights/", "budget": {"max_bytes": 5 << 20}},
    )
    assert status == 422 and problem["type"].endswith(":budget_too_large"), problem
    status, problem = api(
        world,
        token,
        "POST",
        "/requests",
        {"resource": f"s3://{BUCKET}/weights/", "budget": {"max_bytes": -1}},
    )
    assert status == 400 and problem["type"].endswith(":invalid_budget"), problem
