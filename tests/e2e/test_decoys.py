"""Decoy objects through the real gateway with real clients: every way of reading one fires, listing
does not, and nothing in the answers tells a decoy from a real object."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from botocore.exceptions import ClientError
from click.testing import CliRunner
from support.access import api
from support.observed import audit_events, eventually, sample, scrape
from support.world import BUCKET, Identity, World, running_world

from proxy.cli import main

ALERTS = "grantgate_anomaly_alerts_total"
DECOY_DIR = "models/llama-3-70b-instruct/"
DECOY = DECOY_DIR + "model-00001-of-00030.safetensors"
REAL = "models/llama-3-8b/model-00001-of-00004.safetensors"
CONFIG = f"""
[policy]
admin_groups = ["security"]

[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]
decoys = ["s3://{BUCKET}/{DECOY_DIR}"]

[policy.resources.scratch]
paths = ["s3://{BUCKET}/scratch/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
actions = ["read", "list"]
instant_groups = ["ml"]
justification_required = false
approver_groups = ["security"]
"""


@pytest.fixture(scope="module")
def baited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("decoys"), extra_config=CONFIG) as world:
        upstream = world.upstream()
        upstream.put_object(Bucket=BUCKET, Key=DECOY, Body=secrets.token_bytes(64 * 1024))
        upstream.put_object(Bucket=BUCKET, Key=REAL, Body=secrets.token_bytes(64 * 1024))
        yield world


@pytest.fixture
def reader(baited: World) -> Identity:
    """Someone with read and list on models/ and write on scratch/: what a thief would hold."""
    who = baited.person(f"mallory-{secrets.token_hex(4)}")
    baited.grant(who, f"s3://{BUCKET}/models/", "read,list")
    baited.grant(who, f"s3://{BUCKET}/scratch/", "write")
    return who


def logged(world: World, event: str, principal: str) -> list[dict[str, Any]]:
    out = []
    for path in (world.http.log_path, world.https.log_path):
        for line in Path(path).read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event and record.get("principal") == principal:
                    out.append(record)
    return out


def decoy_alerts(world: World, who: Identity) -> list[dict[str, Any]]:
    return [a for a in logged(world, "anomaly_alert", who.name) if a["kind"] == "decoy_touched"]


def held_alerts(world: World, who: Identity) -> list[dict[str, Any]]:
    return [a for a in logged(world, "anomaly_alert", who.name) if a["kind"] == "held_principal_asked"]


def refused_within_a_second(world: World, who: Identity) -> float:
    """Seconds until a read of a real object is refused (AccessDenied), polled; fails after 1 s."""
    s3, start = world.client(who), time.monotonic()
    while True:
        try:
            s3.head_object(Bucket=BUCKET, Key=REAL)
        except ClientError as err:
            assert err.response["Error"]["Code"] == "403"
            return time.monotonic() - start
        assert time.monotonic() - start < 1.0, "still allowed a second after the decoy was read"
        time.sleep(0.02)


def assert_fired(world: World, who: Identity, how: str) -> None:
    waited = refused_within_a_second(world, who)
    [alert] = decoy_alerts(world, who)
    assert alert["severity"] == "critical" and alert["response"] == "suspend_principal"
    assert alert["details"]["decoy"] == f"s3://{BUCKET}/{DECOY}", how
    assert waited < 1.0


def test_a_decoy_read_through_a_presigned_url_fires_and_suspends_the_reader(
    baited: World, reader: Identity
) -> None:
    s3 = baited.client(reader, signature_version="s3v4")
    assert s3.get_object(Bucket=BUCKET, Key=REAL)["Body"].read()  # real objects work until then
    before = sample(scrape(baited.http.control_url), "grantgate_decoy_touches_total", resource="models")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": DECOY}, ExpiresIn=60)
    assert requests.get(url, timeout=10).status_code == 200
    assert_fired(baited, reader, "presigned")
    after = sample(scrape(baited.http.control_url), "grantgate_decoy_touches_total", resource="models")
    assert after == before + 1


def test_a_ranged_get_of_a_decoy_fires(baited: World, reader: Identity) -> None:
    got = baited.client(reader).get_object(Bucket=BUCKET, Key=DECOY, Range="bytes=0-7")
    assert len(got["Body"].read()) == 8
    assert_fired(baited, reader, "ranged GET")


def test_a_copy_from_a_decoy_fires(baited: World, reader: Identity) -> None:
    baited.client(reader).copy_object(
        Bucket=BUCKET, Key=f"scratch/{reader.name}.safetensors", CopySource={"Bucket": BUCKET, "Key": DECOY}
    )
    assert_fired(baited, reader, "copy source")


def test_listing_decoys_does_not_fire(baited: World, reader: Identity) -> None:
    s3 = baited.client(reader)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=DECOY_DIR)
    assert [o["Key"] for o in listed["Contents"]] == [DECOY]  # the lure is visible
    # A real read after the listing: once its event is out, an alert for the listing would be too.
    rid = s3.head_object(Bucket=BUCKET, Key=REAL)["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"]
    baited.http.event_for(rid)
    assert decoy_alerts(baited, reader) == []
    s3.head_object(Bucket=BUCKET, Key=REAL)  # still allowed


def test_a_decoy_answers_exactly_as_a_real_object_does(baited: World, reader: Identity) -> None:
    """Same headers, and a refused read of a decoy says what any refused read says."""
    s3 = baited.client(reader)
    real = s3.head_object(Bucket=BUCKET, Key=REAL)["ResponseMetadata"]["HTTPHeaders"]
    decoy = s3.head_object(Bucket=BUCKET, Key=DECOY)["ResponseMetadata"]["HTTPHeaders"]
    assert sorted(real) == sorted(decoy)
    outsider = baited.person(f"oscar-{secrets.token_hex(4)}")
    messages = []
    for key in (REAL, DECOY):
        with pytest.raises(ClientError) as refused:
            baited.client(outsider).get_object(Bucket=BUCKET, Key=key)
        error = refused.value.response["Error"]
        message = error["Message"].replace(quote(f"s3://{BUCKET}/{key}", safe=""), "URI")
        messages.append((error["Code"], message.replace(key, "KEY")))
    assert messages[0] == messages[1]
    assert_fired(baited, reader, "HEAD")
    # Refused or not, a decoy read is an alert: here about someone who held no grant to suspend.
    [alert] = eventually(lambda: decoy_alerts(baited, outsider), what="the outsider's decoy alert")
    assert alert["details"]["allowed"] is False


def test_a_suspended_reader_in_an_instant_group_gets_no_fresh_grant_until_an_approver_reconfirms(
    baited: World,
) -> None:
    """Regression: the suspension held only the grants in force, so a re-request was granted at once."""
    bob = baited.person(f"bob-held-{secrets.token_hex(4)}", ("ml",))
    security = baited.person(f"sec-{secrets.token_hex(4)}", ("security",))
    mine, theirs = baited.api_token(bob), baited.api_token(security)
    ask = {"resource": f"s3://{BUCKET}/models/", "actions": ["read", "list"], "duration": "1h"}
    status, first = api(baited, mine, "POST", "/requests", ask)
    assert status == 201 and first["status"] == "approved", first
    baited.client(bob).get_object(Bucket=BUCKET, Key=DECOY, Range="bytes=0-7")["Body"].read()
    assert_fired(baited, bob, "instant grant")

    alerts_before = sample(scrape(baited.http.control_url), ALERTS, kind="held_principal_asked") or 0
    status, again = api(baited, mine, "POST", "/requests", ask)
    assert status == 403 and again["code"] == "on_hold", again
    assert "decoy" not in again["detail"]  # the refusal never tells a decoy was the cause
    refused_within_a_second(baited, bob)  # nothing was granted
    # ... but the security team is told that a suspended principal asked again, and how.
    cli = CliRunner().invoke(
        main,
        ["request", f"s3://{BUCKET}/models/", "--actions", "read,list", "--duration", "1h"],
        env={"GRANTGATE_API_URL": baited.http.control_url, "GRANTGATE_TOKEN": mine, "GRANTGATE_CONFIG": ""},
    )
    assert cli.exit_code != 0 and "on hold" in cli.output and "decoy" not in cli.output, cli.output
    asked = eventually(
        lambda: len(found := held_alerts(baited, bob)) == 2 and found, what="the held principal's alerts"
    )
    assert [a["details"]["via"] for a in asked] == ["api", "cli"]
    for alert in asked:
        assert alert["severity"] == "critical" and alert["response"] == "refused_instant_approval"
        assert alert["details"]["resources"] == [f"s3://{BUCKET}/models/"]
        assert "suspended principal asked for access again" in alert["message"]
    recorded = eventually(
        lambda: audit_events(baited, kind="anomaly.held_principal_asked", principal=bob.name),
        what="the audit records",
    )
    assert [e.body["event"]["details"]["via"] for e in recorded] == ["api", "cli"]
    alerts_after = sample(scrape(baited.http.control_url), ALERTS, kind="held_principal_asked")
    assert alerts_after == alerts_before + 2
    status, _ = api(baited, mine, "POST", f"/audit/suspensions/{first['grant_id']}/lift")
    assert status == 403  # the person suspended cannot lift their own hold

    status, lifted = api(baited, theirs, "POST", f"/audit/suspensions/{first['grant_id']}/lift")
    assert status == 200, lifted
    status, after = api(baited, mine, "POST", "/requests", ask)
    assert status == 201 and after["status"] == "approved", after
