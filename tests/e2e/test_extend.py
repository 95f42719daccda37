"""Extending a grant end to end: the API and the CLI on a real gateway, boto3 reads through it. The
extension starts where the grant ends, the policy's maximum counts the whole span, and access never
lapses while it waits."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.access import api, read
from support.observed import eventually
from support.world import BUCKET, Identity, World, running_world

from proxy.cli import main

POLICY = f"""
[policy]
[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml", "infra"]
actions = ["read"]
default_duration = "2h"
max_duration = "8h"
instant_groups = ["infra"]
approver_groups = ["security"]
justification_required = false
"""

WHY = "the evaluation runs over the weekend"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("extend-world"), extra_config=POLICY) as w:
        yield w


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def granted(world: World, requester: Identity, approver: Identity, resource: str, duration: str) -> dict:
    status, created = api(
        world, world.api_token(requester), "POST", "/requests", {"resource": resource, "duration": duration}
    )
    assert status == 201, created
    if created["status"] == "approved":
        return created["grant"]
    status, approved = api(world, world.api_token(approver), "POST", f"/requests/{created['id']}/approve")
    assert status == 200, approved
    return approved["grant"]


def test_extension_waits_for_approval_and_starts_where_the_grant_ends(world: World, unique: str) -> None:
    alice = world.person(f"x-alice-{unique}", ("ml",))
    carol = world.person(f"x-carol-{unique}", ("security",))
    key = f"models/{unique}/w.bin"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"weights")
    first = granted(world, alice, carol, f"s3://{BUCKET}/models/{unique}/", "2h")
    token = world.api_token(alice)

    status, too_long = api(world, token, "POST", f"/grants/{first['id']}/extend", {"duration": "7h"})
    assert (status, too_long["code"]) == (422, "duration_too_long")
    assert "9h in all" in too_long["detail"] and "8h" in too_long["detail"]

    status, pending = api(
        world, token, "POST", f"/grants/{first['id']}/extend", {"duration": "3h", "justification": WHY}
    )
    assert status == 201, pending
    assert (pending["status"], pending["extends"], pending["grant_id"]) == ("pending", first["id"], None)
    assert pending["starts_at"] == first["expires_at"] and pending["duration"] == "3h"
    assert read(world, alice, key) == b"weights"  # the grant stays in force while the extension waits

    status, inbox = api(world, world.api_token(carol), "GET", "/requests?approvable=true")
    assert [r["extends"] for r in inbox["requests"] if r["id"] == pending["id"]] == [first["id"]]
    status, approved = api(world, world.api_token(carol), "POST", f"/requests/{pending['id']}/approve")
    second = approved["grant"]
    assert second["starts_at"] == first["expires_at"]  # no gap
    assert moment(second["expires_at"]) - moment(first["expires_at"]) == timedelta(hours=3)
    status, kept = api(world, token, "GET", f"/grants/{first['id']}")
    assert kept["expires_at"] == first["expires_at"] and kept["active"]  # nothing shortened

    # A chain counts from the first grant: 2h + 3h + 3h is the maximum, one more hour is not.
    status, refused = api(world, token, "POST", f"/grants/{second['id']}/extend", {"duration": "4h"})
    assert (status, refused["code"]) == (422, "duration_too_long") and "9h in all" in refused["detail"]
    status, third = api(world, token, "POST", f"/grants/{second['id']}/extend", {"duration": "3h"})
    assert status == 201 and third["starts_at"] == second["expires_at"]


def test_only_the_holder_extends_and_only_a_grant_in_force(world: World, unique: str) -> None:
    alice = world.person(f"y-alice-{unique}", ("ml",))
    carol = world.person(f"y-carol-{unique}", ("security",))
    mallory = world.person(f"y-mallory-{unique}", ("ml",))
    grant = granted(world, alice, carol, f"s3://{BUCKET}/models/{unique}/", "1h")
    path = f"/grants/{grant['id']}/extend"
    assert api(world, world.api_token(mallory), "POST", path, {"duration": "1h"})[0] == 404
    status, problem = api(world, world.api_token(carol), "POST", path, {"duration": "1h"})
    assert (status, problem["code"]) == (403, "not_yours")
    status, problem = api(world, world.api_token(alice), "POST", path, {})
    assert (status, problem["code"]) == (400, "invalid_body")
    api(world, world.api_token(alice), "DELETE", f"/grants/{grant['id']}")
    status, problem = api(world, world.api_token(alice), "POST", path, {"duration": "1h"})
    assert (status, problem["code"]) == (409, "grant_ended")


def test_instant_extension_keeps_access_across_the_old_end(world: World, unique: str) -> None:
    bob = world.person(f"x-bob-{unique}", ("infra",))
    key = f"models/{unique}/hot.bin"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"hot")
    short = granted(world, bob, bob, f"s3://{BUCKET}/models/{unique}/", "3s")
    status, extended = api(
        world, world.api_token(bob), "POST", f"/grants/{short['id']}/extend", {"duration": "1h"}
    )
    assert status == 201 and extended["status"] == "approved"
    assert extended["grant"]["starts_at"] == short["expires_at"]
    ended = moment(short["expires_at"]) + timedelta(seconds=1)  # the API shows whole seconds
    eventually(lambda: datetime.now(UTC) > ended, timeout=10, what="the first grant's end")
    response = world.client(bob).get_object(Bucket=BUCKET, Key=key)
    assert response["Body"].read() == b"hot"
    event = world.http.event_for(response["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"])
    assert event["grant_ids"] == [extended["grant_id"]]


def test_extend_through_the_cli(world: World, unique: str, tmp_path: Path) -> None:
    alice = world.person(f"z-alice-{unique}", ("ml",))
    carol = world.person(f"z-carol-{unique}", ("security",))
    grant = granted(world, alice, carol, f"s3://{BUCKET}/models/{unique}/", "2h")
    env = {
        "GRANTGATE_API_URL": world.http.control_url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "GRANTGATE_CONFIG": "",
        "GRANTGATE_TOKEN": world.api_token(alice),
    }
    runner = CliRunner()
    result = runner.invoke(main, ["extend", grant["id"], "--by", "2h", "-j", WHY], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    request_id = re.search(r"Request (r_\S+) is pending", result.stdout).group(1)  # type: ignore[union-attr]
    assert f"extension of {grant['id']}" in result.stdout
    shown = runner.invoke(main, ["extend", grant["id"], "--by", "2h", "--json"], env=env)
    assert json.loads(shown.stdout)["extends"] == grant["id"]
    refused = runner.invoke(main, ["extend", grant["id"], "--by", "9h"], env=env)
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "in all" in refused.stderr
    assert request_id
