"""Budgets through the access workflow: a rule's default and maximum budget, a request naming its own,
and the grant JSON carrying the budget and what it has moved."""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner
from support.access import api
from support.world import BUCKET, Identity, World, running_world

from proxy.cli import main

POLICY = f"""
[policy]
admin_groups = ["security"]
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
    mine = _cli(world, who, "mine")
    row = next(line for line in mine.splitlines() if made["grant"]["id"] in line)
    assert row.endswith("585.9 KiB of 1 MiB, single-use")  # 600 000 bytes used of the 1 MiB budget


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


def _receipts(world: World, token: str, query: str, want: int) -> list[dict[str, Any]]:
    """The receipts API's answer once the audit writer has chained `want` rows (it writes in batches)."""
    deadline = time.monotonic() + 10
    while True:
        status, body = api(world, token, "GET", f"/audit/receipts?{query}")
        assert status == 200, body
        if len(body["receipts"]) >= want or time.monotonic() > deadline:
            return list(body["receipts"])
        time.sleep(0.1)


def test_receipts_list_each_version_taken_from_a_versioned_bucket(world: World) -> None:
    bucket = "releases-" + secrets.token_hex(3)
    up = world.upstream()
    up.create_bucket(Bucket=bucket)
    up.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    reader: Identity = world.person("dave-receipts")
    auditor = world.api_token(world.person("sec-receipts", ("security",)))
    grant = world.grant(reader, f"s3://{bucket}/", "read,write")
    s3 = world.client(reader)

    v1 = s3.put_object(Bucket=bucket, Key="model.bin", Body=b"one" * 1000)
    assert s3.get_object(Bucket=bucket, Key="model.bin")["Body"].read() == b"one" * 1000
    v2 = s3.put_object(Bucket=bucket, Key="model.bin", Body=b"two" * 2000)
    for start in range(0, 6000, 2000):  # one version read as three ranges: one receipt
        s3.get_object(Bucket=bucket, Key="model.bin", Range=f"bytes={start}-{start + 1999}")["Body"].read()
    old = s3.get_object(Bucket=bucket, Key="model.bin", VersionId=v1["VersionId"])["Body"].read()
    assert old == b"one" * 1000

    rows = _receipts(world, auditor, f"grant_id={grant.id}", want=4)
    reads = {r["version_id"]: r for r in rows if r["direction"] == "read"}
    writes = {r["version_id"]: r for r in rows if r["direction"] == "write"}
    assert set(reads) == {v1["VersionId"], v2["VersionId"]} == set(writes)
    assert reads[v1["VersionId"]]["bytes"] == 6000 and reads[v1["VersionId"]]["size"] == 3000
    assert reads[v2["VersionId"]]["bytes"] == 6000 and reads[v2["VersionId"]]["size"] == 6000
    assert reads[v2["VersionId"]]["etag"] == v2["ETag"].strip('"')
    assert all(r["complete"] for r in rows)
    assert {r["principal"] for r in rows} == {reader.name}
    assert all({"first_at", "last_at", "key", "bucket"} <= set(r) for r in rows)

    status, usage = api(world, auditor, "GET", f"/audit/usage/{grant.id}")
    assert status == 200
    assert usage["objects_read"] == 2  # two versions, though read five times


def _cli(world: World, who: Identity, *args: str) -> str:
    """`grantgate ARGS` as `who`, through the API with their token."""
    env = {"GRANTGATE_API_URL": world.http.control_url, "GRANTGATE_TOKEN": world.api_token(who)}
    result = CliRunner().invoke(
        main, list(args), env={**env, "GRANTGATE_CONFIG": "", "XDG_CONFIG_HOME": "/nonexistent"}
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_audit_receipts_command_lists_what_a_grant_took_as_a_table_json_and_csv(world: World) -> None:
    reader = world.person("erin-receipts")
    auditor = world.person("sec-receipts-cli", ("security",))
    grant = world.grant(reader, f"s3://{BUCKET}/receipts-cli/", "read")
    world.upstream().put_object(Bucket=BUCKET, Key="receipts-cli/w.bin", Body=b"w" * 4000)
    s3 = world.client(reader)
    for start in (0, 2000):  # two ranges of one version: one receipt of 4000 bytes
        s3.get_object(Bucket=BUCKET, Key="receipts-cli/w.bin", Range=f"bytes={start}-{start + 1999}")[
            "Body"
        ].read()
    [expected] = _receipts(world, world.api_token(auditor), f"grant_id={grant.id}", want=1)

    answered = json.loads(_cli(world, auditor, "audit", "receipts", "--grant", grant.id, "--json"))
    assert answered == {"receipts": [expected]}
    assert expected["bytes"] == 4000 and expected["size"] == 4000 and expected["complete"]

    [row] = list(
        csv.DictReader(io.StringIO(_cli(world, auditor, "audit", "receipts", "--grant", grant.id, "--csv")))
    )
    assert row["key"] == "receipts-cli/w.bin" and row["bytes"] == "4000" and row["complete"] == "True"
    assert row["principal"] == reader.name and row["grant_id"] == grant.id and row["etag"] == expected["etag"]

    table = _cli(
        world, auditor, "audit", "receipts", "--principal", reader.name, "--since", "1h"
    ).splitlines()
    assert table[0].split()[:3] == ["PRINCIPAL", "GRANT", "DIR"]
    [line] = table[1:]
    assert f"s3://{BUCKET}/receipts-cli/w.bin" in line and "complete" in line and " 4000 " in line
    assert _cli(world, auditor, "audit", "receipts", "--principal", "nobody-here") == "no matching receipts\n"
