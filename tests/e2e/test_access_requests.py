"""The access-request journey end to end: real gateway processes with a policy, boto3, the API, the CLI.

alice is denied by the gateway, asks through the API (or the CLI), carol approves, alice's boto3 read
succeeds, the grant is revoked and the next read is denied.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner
from support.access import api, denied_link, read
from support.world import BUCKET, Identity, World, running_world

from proxy.cli import main

POLICY = f"""
[policy]
admin_groups = ["admins"]
sweep_interval_seconds = 0.2

[policy.resources.models]
description = "Model weights"
paths = ["s3://{BUCKET}/models/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml", "infra"]
actions = ["read", "list"]
default_duration = "2h"
max_duration = "8h"
justification_min_length = 10
instant_groups = ["infra"]
approver_groups = ["security"]
approvals_required = 1

[[policy.standing]]
principal = "inference-server"
resource = "models"
actions = ["read", "list"]
"""

WHY = "evaluate the new quantisation"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("access-world"), extra_config=POLICY) as w:
        yield w


def test_journey_through_the_api(world: World, unique: str) -> None:
    alice = world.person(f"alice-{unique}", ("ml",))
    carol = world.person(f"carol-{unique}", ("security",))
    alice_token, carol_token = world.api_token(alice), world.api_token(carol)
    key = f"models/{unique}/llama.gguf"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"GGUF weights")

    # 1. The gateway refuses and links to the request page, which opens.
    link = denied_link(world, alice, key)
    with urllib.request.urlopen(link, timeout=10) as page:
        assert page.status == 200
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    resource, action = query["resource"][0], query["action"][0]
    assert (resource, action) == (f"s3://{BUCKET}/{key}", "read")

    # 2. alice asks for the prefix, with exactly the acceptance check's shape.
    status, created = api(
        world,
        alice_token,
        "POST",
        "/requests",
        {
            "resource": f"s3://{BUCKET}/models/{unique}/",
            "actions": [action],
            "duration": "2h",
            "justification": WHY,
        },
    )
    assert status == 201, created
    assert created["status"] == "pending" and created["grant_id"] is None
    with pytest.raises(ClientError):  # still nothing until someone approves
        read(world, alice, key)

    # 3. carol finds it in her pending list and approves.
    status, pending = api(world, carol_token, "GET", "/requests?status=pending")
    assert created["id"] in [r["id"] for r in pending["requests"]]
    status, approved = api(
        world, carol_token, "POST", f"/requests/{created['id']}/approve", {"comment": "ok"}
    )
    assert status == 200 and approved["status"] == "approved" and approved["grant_id"]
    world.sync()

    # 4. alice reads with boto3.
    assert read(world, alice, key) == b"GGUF weights"
    status, grants = api(world, alice_token, "GET", f"/grants?principal={alice.name}&active=true")
    assert [g["id"] for g in grants["grants"]] == [approved["grant_id"]]
    status, me = api(world, alice_token, "GET", "/whoami")
    assert me["principal"] == alice.name

    # 5. Revoked: the next read is denied.
    status, revoked = api(world, carol_token, "DELETE", f"/grants/{approved['grant_id']}")
    assert status == 200 and revoked["revoked_at"]
    world.sync()
    denied_link(world, alice, key)


def test_journey_through_the_cli(world: World, unique: str, tmp_path: Path) -> None:
    alice = world.person(f"alice-{unique}", ("ml",))
    carol = world.person(f"carol-{unique}", ("security",))
    key = f"models/{unique}/mistral.safetensors"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"safetensors weights")
    runner = CliRunner()
    base_env = {
        "GRANTGATE_API_URL": world.http.control_url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "GRANTGATE_CONFIG": "",
    }

    def cli(who: Identity, *args: str) -> str:
        result = runner.invoke(main, list(args), env={**base_env, "GRANTGATE_TOKEN": world.api_token(who)})
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    denied_link(world, alice, key)
    out = cli(alice, "request", f"s3://{BUCKET}/models/{unique}/", "--duration", "1h", "-j", WHY)
    request_id = re.search(r"Request (r_\S+) is pending", out).group(1)  # type: ignore[union-attr]
    inbox = json.loads(cli(carol, "requests", "--inbox", "--json"))
    assert request_id in [r["id"] for r in inbox]
    assert request_id in cli(carol, "requests", "--inbox")  # the table
    out = cli(carol, "approve", request_id, "--comment", "fine")
    grant_id = re.search(r"Granted: (g_\S+)", out).group(1)  # type: ignore[union-attr]
    world.sync()
    assert read(world, alice, key) == b"safetensors weights"
    assert grant_id in cli(alice, "mine")
    assert grant_id in cli(carol, "grants", "list", "--api", "--principal", alice.name)
    cli(alice, "revoke", grant_id, "--reason", "done")
    world.sync()
    denied_link(world, alice, key)

    # Refusals are one readable line with exit code 2.
    result = runner.invoke(
        main, ["approve", request_id], env={**base_env, "GRANTGATE_TOKEN": world.api_token(alice)}
    )
    assert result.exit_code == 2 and "already approved" in result.stderr


def test_infra_is_approved_instantly(world: World, unique: str) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    key = f"models/{unique}/w.gguf"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"w")
    status, body = api(
        world,
        world.api_token(bob),
        "POST",
        "/requests",
        {"resource": f"s3://{BUCKET}/models/{unique}/", "justification": WHY},
    )
    assert status == 201 and body["status"] == "approved" and body["grant_id"]
    world.sync()
    assert read(world, bob, key) == b"w"


def test_standing_access_exists_from_start_once(world: World) -> None:
    inference = world.person("inference-server")
    world.upstream().put_object(Bucket=BUCKET, Key="models/served.gguf", Body=b"served")
    assert read(world, inference, "models/served.gguf") == b"served"
    root = world.person("root-admin", ("admins",))
    status, grants = api(
        world, world.api_token(root), "GET", "/grants?principal=inference-server&active=true"
    )
    assert status == 200
    # Two gateways started and each synced the policy: still one standing grant.
    assert [(g["source"], g["expires_at"]) for g in grants["grants"]] == [("standing", None)]


def test_login_checks_the_token_and_saves_it_privately(world: World, unique: str, tmp_path: Path) -> None:
    carol = world.person(f"carol-{unique}", ("security",))
    env = {
        "XDG_CONFIG_HOME": str(tmp_path),
        "GRANTGATE_API_URL": "",
        "GRANTGATE_TOKEN": "",
        "GRANTGATE_CONFIG": "",
    }
    runner = CliRunner()
    bad = runner.invoke(main, ["login", "--api-url", world.http.control_url, "--token", "ggt_nope"], env=env)
    assert bad.exit_code == 2 and "unknown or revoked" in bad.stderr
    assert not (tmp_path / "grantgate" / "cli.toml").exists()
    token = world.api_token(carol)
    result = runner.invoke(main, ["login", "--api-url", world.http.control_url], input=token + "\n", env=env)
    assert result.exit_code == 0, result.output
    saved = tmp_path / "grantgate" / "cli.toml"
    assert saved.stat().st_mode & 0o077 == 0
    whoami = runner.invoke(main, ["whoami", "--json"], env=env)
    assert whoami.exit_code == 0, whoami.output
    assert json.loads(whoami.stdout)["approver_for"] == ["models"]
