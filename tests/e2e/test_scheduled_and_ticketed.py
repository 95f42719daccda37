"""Scheduled access and ticket references end to end: the API and the CLI on a real gateway, boto3 reads
through it, and the audit trail in the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner
from support.access import api, read
from support.observed import audit_events, eventually
from support.world import BUCKET, World, running_world

from proxy.cli import main

POLICY = f"""
[policy]
[policy.resources.releases]
paths = ["s3://{BUCKET}/releases/"]

[policy.resources.evals]
paths = ["s3://{BUCKET}/evals/"]

[[policy.rules]]
resource = "releases"
requester_groups = ["infra"]
actions = ["read"]
instant_groups = ["infra"]
approver_groups = ["security"]
justification_required = false

[[policy.rules]]
resource = "evals"
requester_groups = ["ml"]
actions = ["read"]
approver_groups = ["security"]
justification_required = false
ticket_required = true
ticket_pattern = "^ML-[0-9]+$"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("lifecycle-world"), extra_config=POLICY) as w:
        yield w


def refused(world: World, who: object, key: str) -> bool:
    try:
        read(world, who, key)  # type: ignore[arg-type]
    except ClientError as err:
        return err.response["Error"]["Code"] == "AccessDenied"
    return False


def test_a_scheduled_grant_is_approved_ahead_and_opens_only_at_its_start(world: World, unique: str) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    key = f"releases/{unique}/v2.gguf"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"release weights")
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)

    status, created = api(
        world,
        world.api_token(bob),
        "POST",
        "/requests",
        {"resource": f"s3://{BUCKET}/releases/", "duration": "1h", "starts_at": starts.isoformat()},
    )
    assert status == 201 and created["status"] == "approved", created
    assert created["starts_at"] == starts.isoformat().replace("+00:00", "Z")
    grant = created["grant"]
    assert grant["starts_at"] == created["starts_at"] and grant["active"] is False
    assert grant["expires_at"] == (starts + timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    # Approved, loaded by the gateway (read-your-writes), and still refused until the window opens.
    assert refused(world, bob, key)
    eventually(lambda: datetime.now(UTC) >= starts and not refused(world, bob, key), what="the window")
    assert read(world, bob, key) == b"release weights"


def test_a_schedule_needs_a_time_zone(world: World, unique: str) -> None:
    bob = world.person(f"bob-tz-{unique}", ("infra",))
    status, problem = api(
        world,
        world.api_token(bob),
        "POST",
        "/requests",
        {"resource": f"s3://{BUCKET}/releases/", "starts_at": "2030-01-01T22:00:00"},
    )
    assert status == 400 and "time zone" in problem["detail"], problem


def test_a_rule_that_requires_a_ticket_refuses_without_one_and_shows_it_to_approvers(
    world: World, unique: str, tmp_path: Path
) -> None:
    alice = world.person(f"alice-{unique}", ("ml",))
    carol = world.person(f"carol-{unique}", ("security",))
    resource = f"s3://{BUCKET}/evals/"
    token = world.api_token(alice)

    status, problem = api(world, token, "POST", "/requests", {"resource": resource})
    assert (status, problem["code"]) == (422, "ticket_missing"), problem
    status, problem = api(world, token, "POST", "/requests", {"resource": resource, "ticket": "JIRA-1"})
    assert (status, problem["code"]) == (422, "invalid_ticket"), problem

    # The CLI, as alice would type it.
    env = {
        "GRANTGATE_API_URL": world.http.control_url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "GRANTGATE_CONFIG": "",
    }
    result = CliRunner().invoke(
        main, ["request", resource, "--ticket", "ML-4242", "--json"], env={**env, "GRANTGATE_TOKEN": token}
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["status"] == "pending" and created["ticket"] == "ML-4242"

    shown = CliRunner().invoke(
        main, ["requests", created["id"]], env={**env, "GRANTGATE_TOKEN": world.api_token(carol)}
    )
    assert shown.exit_code == 0 and "ticket:         ML-4242" in shown.stdout, shown.output
    status, inbox = api(world, world.api_token(carol), "GET", "/requests?approvable=true")
    assert [r["ticket"] for r in inbox["requests"] if r["id"] == created["id"]] == ["ML-4242"]

    recorded = eventually(
        lambda: audit_events(world, kind="request_created", principal=alice.name), what="the audit record"
    )
    assert recorded[-1].body["event"]["ticket"] == "ML-4242", recorded[-1].body
