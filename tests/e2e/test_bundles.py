"""Bundles end to end: one request for a model and its eval set through the API on a real gateway, each
resource's own rule satisfied, one request for approvers, the grants made together, boto3 reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.access import api, read
from support.world import BUCKET, Identity, World, running_world

from proxy.cli import main

POLICY = f"""
[policy]
[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]

[policy.resources.evals]
paths = ["s3://{BUCKET}/evals/"]

[policy.resources.public]
paths = ["s3://{BUCKET}/public/"]

[policy.resources.secrets]
paths = ["s3://{BUCKET}/secrets/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml", "infra"]
actions = ["read"]
default_duration = "3h"
max_duration = "8h"
instant_groups = ["infra"]
approver_groups = ["security", "model-owners"]
justification_required = false

[[policy.rules]]
resource = "evals"
requester_groups = ["ml", "infra"]
actions = ["read"]
default_duration = "1h"
max_duration = "4h"
instant_groups = ["infra"]
approver_groups = ["security"]
approvals_required = 2
justification_required = false

[[policy.rules]]
resource = "public"
requester_groups = ["ml", "infra"]
actions = ["read"]
approvals_required = 0
justification_required = false

[[policy.rules]]
resource = "secrets"
requester_groups = ["admins"]
actions = ["read"]
approver_groups = ["security"]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("bundle-world"), extra_config=POLICY) as w:
        yield w


def bundle(unique: str, *areas: str) -> list[str]:
    return [f"s3://{BUCKET}/{area}/{unique}/" for area in areas]


def test_bundle_needs_every_rule_and_is_granted_together(world: World, unique: str) -> None:
    alice = world.person(f"b-alice-{unique}", ("ml",))
    carol = world.person(f"b-carol-{unique}", ("security",))
    dave = world.person(f"b-dave-{unique}", ("security",))
    owen = world.person(f"b-owen-{unique}", ("model-owners",))
    for area in ("models", "evals", "public"):
        world.upstream().put_object(Bucket=BUCKET, Key=f"{area}/{unique}/x", Body=area.encode())

    status, created = api(
        world,
        world.api_token(alice),
        "POST",
        "/requests",
        {
            "resources": bundle(unique, "models", "evals", "public"),
            "duration": "2h",
            "justification": "eval run",
        },
    )
    assert status == 201, created
    assert (created["status"], created["grant_id"], created["grant_ids"]) == ("pending", None, [])
    assert created["resources"] == bundle(unique, "models", "evals", "public")
    assert created["approvals_required"] == 2  # the most any part's rule requires

    # One request in each approver's inbox; an approver of only one of the resources cannot approve it.
    status, inbox = api(world, world.api_token(carol), "GET", "/requests?approvable=true")
    assert [r["id"] for r in inbox["requests"] if alice.name == r["requester"]] == [created["id"]]
    status, refused = api(world, world.api_token(owen), "POST", f"/requests/{created['id']}/approve")
    assert (status, refused["code"]) == (403, "not_an_approver") and "evals" in refused["detail"]

    status, half = api(world, world.api_token(carol), "POST", f"/requests/{created['id']}/approve")
    assert (status, half["status"], half["grant_ids"]) == (200, "pending", [])
    status, done = api(world, world.api_token(dave), "POST", f"/requests/{created['id']}/approve")
    assert done["status"] == "approved" and len(done["grant_ids"]) == 3
    assert done["grant_id"] == done["grant_ids"][0] == done["grant"]["id"]
    status, grants = api(world, world.api_token(alice), "GET", f"/grants?principal={alice.name}")
    held = {g["id"]: g["resource"] for g in grants["grants"]}
    assert [held[g] for g in done["grant_ids"]] == bundle(unique, "models", "evals", "public")
    world.sync()
    assert [read(world, alice, f"{area}/{unique}/x") for area in ("models", "evals", "public")] == [
        b"models",
        b"evals",
        b"public",
    ]


def test_a_part_the_policy_refuses_refuses_the_bundle_and_stores_nothing(world: World, unique: str) -> None:
    alice = world.person(f"c-alice-{unique}", ("ml",))
    token = world.api_token(alice)
    status, refused = api(
        world, token, "POST", "/requests", {"resources": bundle(unique, "models", "secrets")}
    )
    assert status == 403 and f"s3://{BUCKET}/secrets/{unique}/" in refused["detail"]
    status, too_long = api(
        world, token, "POST", "/requests", {"resources": bundle(unique, "models", "evals"), "duration": "6h"}
    )
    assert (status, too_long["code"]) == (422, "duration_too_long") and "evals" in too_long["detail"]
    status, twice = api(world, token, "POST", "/requests", {"resources": bundle(unique, "models", "models")})
    assert (status, twice["code"]) == (422, "duplicate_resource")
    status, both = api(
        world, token, "POST", "/requests", {"resource": "models", "resources": bundle(unique, "models")}
    )
    assert (status, both["code"]) == (400, "invalid_body")
    assert api(world, token, "GET", f"/requests?requester={alice.name}")[1]["requests"] == []


def test_instant_bundle_is_granted_at_once(world: World, unique: str) -> None:
    bob = world.person(f"b-bob-{unique}", ("infra",))
    world.upstream().put_object(Bucket=BUCKET, Key=f"evals/{unique}/y", Body=b"y")
    status, created = api(
        world, world.api_token(bob), "POST", "/requests", {"resources": bundle(unique, "models", "evals")}
    )
    assert status == 201 and created["status"] == "approved" and len(created["grant_ids"]) == 2
    assert created["duration"] == "1h"  # no duration asked: the shortest default of the rules (3h, 1h)
    world.sync()
    assert read(world, bob, f"evals/{unique}/y") == b"y"


def cli(world: World, who: Identity, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {
        "GRANTGATE_API_URL": world.http.control_url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "GRANTGATE_CONFIG": "",
        "GRANTGATE_TOKEN": world.api_token(who),
    }
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_requests_a_bundle_and_prints_every_grant(world: World, unique: str, tmp_path: Path) -> None:
    bob = world.person(f"b-cli-{unique}", ("infra",))
    for area in ("models", "evals"):
        world.upstream().put_object(Bucket=BUCKET, Key=f"{area}/{unique}/z", Body=area.encode())
    resources = bundle(unique, "models", "evals")

    code, out, err = cli(world, bob, tmp_path, "request", *resources, "-j", "eval run")
    assert code == 0, err
    ids = re.search(r"Granted: (g_\S+), (g_\S+) give ", out)
    assert ids is not None and " and ".join(resources) in out, out
    held = {g["id"]: g["resource"] for g in api(world, world.api_token(bob), "GET", "/grants")[1]["grants"]}
    assert {held[ids.group(1)], held[ids.group(2)]} == set(resources)
    world.sync()
    assert [read(world, bob, f"{area}/{unique}/z") for area in ("models", "evals")] == [b"models", b"evals"]

    # --json answers with the API's shape, grant_ids included; one resource keeps the old form.
    code, out, err = cli(world, bob, tmp_path, "request", resources[0], "--json")
    assert code == 0, err
    single = json.loads(out)
    assert single["status"] == "approved" and len(single["grant_ids"]) == 1 and "resources" in single


def test_the_cli_refuses_a_bundle_a_rule_refuses_in_one_line(
    world: World, unique: str, tmp_path: Path
) -> None:
    bob = world.person(f"b-cli2-{unique}", ("infra",))
    code, out, err = cli(world, bob, tmp_path, "request", *bundle(unique, "models", "secrets"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "secrets" in err, (out, err)
    assert api(world, world.api_token(bob), "GET", f"/requests?requester={bob.name}")[1]["requests"] == []
