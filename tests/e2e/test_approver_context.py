"""What the approver sees next to a pending request, through the real gateway: the requester's groups, the
size of the prefix (a bounded, cached listing of moto's bucket), their past grants there and their use
(from the audit store's usage view), and access they already hold; in the API and in the CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.access import api, read
from support.observed import eventually
from support.world import BUCKET, UPSTREAM_KEY, World, running_world

from proxy.cli import main
from proxy.config import UpstreamSettings
from proxy.s3.prefixsize import PrefixSizer
from proxy.s3.upstream import Upstream, new_pool

POLICY = f"""
[policy.resources.models]
description = "Model weights"
paths = ["s3://{BUCKET}/models/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
actions = ["read", "list"]
default_duration = "2h"
max_duration = "8h"
approver_groups = ["security"]
"""

WHY = "evaluate the new quantisation"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("context-world"), extra_config=POLICY) as w:
        yield w


def _ask(world: World, token: str, resource: str, actions: list[str]) -> str:
    status, created = api(
        world, token, "POST", "/requests", {"resource": resource, "actions": actions, "justification": WHY}
    )
    assert status == 201 and created["status"] == "pending", created
    return str(created["id"])


def test_pending_request_shows_groups_size_past_use_and_overlap(
    world: World, unique: str, tmp_path: Path
) -> None:
    alice = world.person(f"alice-{unique}", ("ml", "eval"))
    carol = world.person(f"carol-{unique}", ("security",))
    alice_token, carol_token = world.api_token(alice), world.api_token(carol)
    prefix = f"models/{unique}/"
    resource = f"s3://{BUCKET}/{prefix}"
    for name, size in (("a", 10), ("b", 20), ("c", 30)):
        world.upstream().put_object(Bucket=BUCKET, Key=prefix + name, Body=b"x" * size)

    # A first request: nothing in the past, nothing held.
    first = _ask(world, alice_token, resource, ["read"])
    status, shown = api(world, carol_token, "GET", f"/requests/{first}")
    assert status == 200
    context = shown["context"]
    assert context["groups"] == ["eval", "ml"]
    assert context["prefixes"] == [
        {"resource": resource, "objects": 3, "bytes": 60, "complete": True, "error": ""}
    ]
    assert context["past_grants"] == [] and context["overlapping"] == []

    # Approved and used: alice reads 20 bytes under it.
    status, approved = api(world, carol_token, "POST", f"/requests/{first}/approve", {})
    assert status == 200 and approved["status"] == "approved", approved
    grant_id = approved["grant_id"]
    world.sync()
    assert read(world, alice, prefix + "b") == b"x" * 20

    # A second request on the same prefix: the first grant is past use and overlapping access.
    second = _ask(world, alice_token, resource, ["read", "list"])

    def used() -> dict[str, Any] | None:
        body = api(world, carol_token, "GET", f"/requests/{second}")[1]
        past = body["context"]["past_grants"]
        return body["context"] if past and past[0]["bytes_read"] else None

    context = eventually(used, what="the first grant's use in the context")
    (past,) = context["past_grants"]
    assert past["grant_id"] == grant_id and past["active"] is True
    assert past["bytes_read"] == 20 and past["last_used_at"]
    assert [g["grant_id"] for g in context["overlapping"]] == [grant_id]

    # Not to the requester: the prefix's size is about objects she cannot read yet.
    assert api(world, alice_token, "GET", f"/requests/{second}")[1]["context"] is None
    # Decided requests carry no context (nothing left to decide).
    assert api(world, carol_token, "GET", f"/requests/{first}")[1]["context"] is None

    # The CLI: `grantgate requests --pending` and `grantgate requests ID` show the same facts.
    runner = CliRunner()
    env = {
        "GRANTGATE_API_URL": world.http.control_url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "GRANTGATE_CONFIG": "",
        "GRANTGATE_TOKEN": carol_token,
    }
    pending = runner.invoke(main, ["requests", "--pending", "--requester", alice.name], env=env)
    assert pending.exit_code == 0, (pending.output, pending.exception)
    assert f"{second}: {alice.name} on {resource}" in pending.stdout
    assert f"Under {resource}: 3 objects, 60 B" in pending.stdout
    assert "Groups: eval, ml" in pending.stdout
    assert re.search(
        rf"{grant_id} read {re.escape(resource)}: 20 B read, 0 B written, last used", pending.stdout
    )
    assert f"Already holds: read on {resource} until" in pending.stdout
    one = runner.invoke(main, ["requests", second], env=env)
    assert one.exit_code == 0, (one.output, one.exception)
    assert "to decide:" in one.stdout and "Past grants here: 1" in one.stdout


async def test_listing_is_bounded_and_cached(world: World, unique: str) -> None:
    prefix = f"models/{unique}/"
    for i in range(5):
        world.upstream().put_object(Bucket=BUCKET, Key=f"{prefix}{i}", Body=b"y" * 4)
    settings = UpstreamSettings(
        endpoint_url=world.upstream_url, access_key_id=UPSTREAM_KEY, secret_access_key=UPSTREAM_KEY
    )
    pool = new_pool(settings)
    now = [0.0]
    try:
        small = PrefixSizer(Upstream(settings, pool), clock=lambda: now[0], max_pages=2, page_keys=2)
        bounded = await small.size(BUCKET, prefix)
        # Two pages of two keys, and more left: lower bounds, said as "more than".
        assert (bounded.objects, bounded.bytes, bounded.complete) == (4, 16, False)
        assert small.listings == 2

        # Cached for minutes: a new object is not seen, and the bucket is not listed again...
        world.upstream().put_object(Bucket=BUCKET, Key=f"{prefix}5", Body=b"y")
        assert await small.size(BUCKET, prefix) == bounded and small.listings == 2
        # ... until the cache lapses.
        now[0] += 301
        whole = await PrefixSizer(Upstream(settings, pool), max_pages=10, page_keys=2).size(BUCKET, prefix)
        assert (whole.objects, whole.bytes, whole.complete) == (6, 21, True)
        assert (await small.size(BUCKET, prefix)).objects == 4 and small.listings == 4

        # A bucket that is not there: the size is unknown, said so, never a guess.
        missing = await small.size("no-such-bucket", "x/")
        assert missing.error and missing.objects == 0
    finally:
        await pool.close()
