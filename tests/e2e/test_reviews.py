"""Periodic reviews of long-held access end to end: two gateways sweeping one store, reviewers confirming
and revoking through the API, boto3 reading through the gateway, and the audit trail in the store.

Time passes for real, on a short period: `review_every = "2s"` makes a standing grant due two seconds after
it began (or was last confirmed), as 90 days would in production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner
from support.access import api, read
from support.cli import user_error
from support.observed import audit_events, eventually
from support.world import BUCKET, Identity, World, running_world

from proxy.cli import main

POLICY = f"""
[policy]
sweep_interval_seconds = 0.2

[policy.resources.weights]
paths = ["s3://{BUCKET}/reviewed/"]
review_every = "2s"
review_grace = "1h"

[[policy.rules]]
resource = "weights"
requester_groups = ["ml"]
actions = ["read"]
approver_groups = ["security"]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("reviews-world"), extra_config=POLICY) as w:
        yield w


def refused(world: World, who: Identity, key: str) -> bool:
    try:
        read(world, who, key)
    except ClientError as err:
        return err.response["Error"]["Code"] == "AccessDenied"
    return False


def open_review(world: World, token: str, grant_id: str, *, other_than: str = "") -> dict[str, Any] | None:
    status, body = api(world, token, "GET", "/reviews")
    assert status == 200, body
    found = [r for r in body["reviews"] if r["grant_id"] == grant_id and r["id"] != other_than]
    return found[0] if found else None


def holder_and_reviewer(world: World, unique: str) -> tuple[Identity, Identity, str]:
    """A holder of standing access to a reviewed prefix with one object in it, and a reviewer."""
    alice = world.person(f"alice-{unique}", ("ml",))
    carol = world.person(f"carol-{unique}", ("security",))
    key = f"reviewed/{unique}/model.safetensors"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"weights!" * 128)
    return alice, carol, key


def test_a_confirmed_review_keeps_access_until_the_next_period(world: World, unique: str) -> None:
    alice, carol, key = holder_and_reviewer(world, unique)
    grant = world.grant(alice, f"s3://{BUCKET}/reviewed/{unique}/", "read", ttl=None)
    assert read(world, alice, key) == b"weights!" * 128
    alice_token, carol_token = world.api_token(alice), world.api_token(carol)

    review = eventually(lambda: open_review(world, carol_token, grant.id), what="the review to open")
    assert review["principal"] == alice.name and review["resource_name"] == "weights"
    assert review["reviewers"] == ["security"] and review["can_decide"] is True
    # The reviewer sees what the holder did with the access.
    usage = eventually(
        lambda: (
            (r := api(world, carol_token, "GET", f"/reviews/{review['id']}")[1])["usage"]["bytes_read"]
            and r["usage"]
        ),
        what="the holder's use in the review",
    )
    assert usage["bytes_read"] == 1024 and usage["objects_read"] == 1 and usage["used_in_period"] is True
    assert usage["last_used_at"] is not None

    # The holder sees their own review, and may not decide it.
    mine = open_review(world, alice_token, grant.id)
    assert mine is not None and mine["can_decide"] is False
    status, problem = api(world, alice_token, "POST", f"/reviews/{review['id']}", {"decision": "confirm"})
    assert status == 403 and problem["code"] == "self_review", problem
    status, problem = api(world, carol_token, "POST", f"/reviews/{review['id']}", {"decision": "maybe"})
    assert status == 422 and problem["code"] == "invalid_decision", problem

    status, decided = api(
        world, carol_token, "POST", f"/reviews/{review['id']}", {"decision": "confirm", "comment": "training"}
    )
    assert status == 200, decided
    assert decided["status"] == "confirmed" and decided["decided_by"] == carol.name
    status, again = api(world, carol_token, "POST", f"/reviews/{review['id']}", {"decision": "revoke"})
    assert status == 409 and again["code"] == "already_decided", again
    assert read(world, alice, key) == b"weights!" * 128

    # The next period starts at the confirmation.
    following = eventually(
        lambda: open_review(world, carol_token, grant.id, other_than=review["id"]), what="the next review"
    )
    assert following["period_start"] == decided["decided_at"]
    recorded = eventually(
        lambda: audit_events(world, kind="review_decided", grant_id=grant.id), what="the audit record"
    )
    assert [e.body["event"]["decision"] for e in recorded] == ["confirmed"]
    assert recorded[0].body["event"]["actor"] == carol.name


def review_use(world: World, token: str, review_id: str) -> dict[str, Any]:
    status, body = api(world, token, "GET", f"/reviews/{review_id}")
    assert status == 200, body
    return dict(body["usage"])


def test_a_review_shows_use_over_its_period_only(world: World, unique: str) -> None:
    alice, carol, key = holder_and_reviewer(world, unique)
    grant = world.grant(alice, f"s3://{BUCKET}/reviewed/{unique}/", "read", ttl=None)
    read(world, alice, key)
    read(world, alice, key)
    token = world.api_token(carol)
    review = eventually(lambda: open_review(world, token, grant.id), what="the review to open")
    first = eventually(
        lambda: (u := review_use(world, token, review["id"]))["bytes_read"] == 2048 and u,
        what="two reads in the first period",
    )
    assert first["objects_read"] == 2 and first["requests"] == 2 and first["used_in_period"] is True
    status, decided = api(world, token, "POST", f"/reviews/{review['id']}", {"decision": "confirm"})
    assert status == 200, decided

    # The next period starts at the confirmation: the reads before it are not this period's use.
    following = eventually(
        lambda: open_review(world, token, grant.id, other_than=review["id"]), what="the next review"
    )
    unused = following["usage"]
    assert (unused["requests"], unused["bytes_read"], unused["objects_read"]) == (0, 0, 0), unused
    assert unused["used_in_period"] is False and unused["last_used_at"] is None
    read(world, alice, key)
    now_used = eventually(
        lambda: (u := review_use(world, token, following["id"]))["requests"] and u,
        what="the read in the new period",
    )
    assert (now_used["requests"], now_used["bytes_read"], now_used["objects_read"]) == (1, 1024, 1)
    assert now_used["last_used_at"] >= decided["decided_at"]
    # The confirmed review still shows the period it covered, up to its decision.
    assert review_use(world, token, review["id"])["bytes_read"] == 2048


def test_a_review_revoked_ends_s3_access_at_once(world: World, unique: str) -> None:
    alice, carol, key = holder_and_reviewer(world, unique)
    grant = world.grant(alice, f"s3://{BUCKET}/reviewed/{unique}/", "read", ttl=None)
    carol_token = world.api_token(carol)
    review = eventually(lambda: open_review(world, carol_token, grant.id), what="the review to open")
    assert read(world, alice, key)

    status, decided = api(
        world, carol_token, "POST", f"/reviews/{review['id']}", {"decision": "revoke", "comment": "left team"}
    )
    assert status == 200 and decided["status"] == "revoked", decided
    assert refused(world, alice, key)  # read-your-writes: this gateway honours it before answering
    revoked = eventually(
        lambda: audit_events(world, kind="grant_revoked", grant_id=grant.id), what="the audit record"
    )
    assert [e.body["event"]["reason"] for e in revoked] == ["revoked in review: left team"]
    assert revoked[0].body["event"]["actor"] == carol.name


def test_someone_outside_the_reviewers_neither_sees_nor_decides(world: World, unique: str) -> None:
    alice, carol, _ = holder_and_reviewer(world, unique)
    mallory = world.person(f"mallory-{unique}", ("ml",))
    grant = world.grant(alice, f"s3://{BUCKET}/reviewed/{unique}/", "read", ttl=None)
    review = eventually(lambda: open_review(world, world.api_token(carol), grant.id), what="the review")
    token = world.api_token(mallory)
    assert open_review(world, token, grant.id) is None
    status, problem = api(world, token, "POST", f"/reviews/{review['id']}", {"decision": "revoke"})
    assert status == 404 and problem["code"] == "not_found", problem
    status, problem = api(world, token, "GET", "/reviews?status=sometimes")
    assert status == 400 and problem["code"] == "invalid_query", problem


def test_a_short_grant_is_never_reviewed(world: World, unique: str) -> None:
    alice, carol, _ = holder_and_reviewer(world, unique)
    short = world.grant(alice, f"s3://{BUCKET}/reviewed/{unique}/", "read", ttl=None)
    world.revoke(short)  # access that ended before its period: nothing to review
    standing = world.grant(alice, f"s3://{BUCKET}/reviewed/{unique}/x/", "read", ttl=None)
    token = world.api_token(carol)
    # The standing grant made after the short one comes up for review; the short one never does.
    eventually(lambda: open_review(world, token, standing.id), what="the standing grant's review")
    status, body = api(world, token, "GET", "/reviews?status=all")
    assert status == 200 and not [r for r in body["reviews"] if r["grant_id"] == short.id]


def cli_env(world: World, who: Identity, home: Path) -> dict[str, str]:
    return {
        "GRANTGATE_API_URL": world.http.control_url,
        "XDG_CONFIG_HOME": str(home),
        "GRANTGATE_CONFIG": "",
        "GRANTGATE_TOKEN": world.api_token(who),
    }


def test_reviews_through_the_cli(world: World, unique: str, tmp_path: Path) -> None:
    alice, carol, key = holder_and_reviewer(world, unique)
    grant = world.grant(alice, f"s3://{BUCKET}/reviewed/{unique}/", "read", ttl=None)
    read(world, alice, key)
    env = cli_env(world, carol, tmp_path)
    runner = CliRunner()
    review = eventually(lambda: open_review(world, env["GRANTGATE_TOKEN"], grant.id), what="the review")

    listed = eventually(
        lambda: (
            (r := runner.invoke(main, ["reviews"], env=env)).exit_code == 0
            and "1.0 KiB read, 1 objects" in r.stdout
            and r.stdout
        ),
        what="the review with its use in the CLI",
    )
    [line] = [row for row in listed.splitlines() if review["id"] in row]
    assert alice.name in line and "(you review)" in line and "open" in line
    as_json = json.loads(runner.invoke(main, ["reviews", "--json"], env=env).stdout)
    assert review["id"] in [r["id"] for r in as_json]

    own = runner.invoke(main, ["reviews", "confirm", review["id"]], env=cli_env(world, alice, tmp_path))
    user_error(own, "nobody reviews their own access")
    unknown = runner.invoke(main, ["reviews", "revoke", "v_nope"], env=env)
    user_error(unknown, "no review v_nope")

    revoked = runner.invoke(main, ["reviews", "revoke", review["id"], "-c", "project over"], env=env)
    assert revoked.exit_code == 0, (revoked.output, revoked.exception)
    assert revoked.stdout.strip() == (
        f"Review {review['id']}: {alice.name}'s access to s3://{BUCKET}/reviewed/{unique}/ is revoked."
    )
    assert refused(world, alice, key)
    history = runner.invoke(main, ["reviews", "--all"], env=env)
    assert [row for row in history.stdout.splitlines() if review["id"] in row and "revoked" in row]
