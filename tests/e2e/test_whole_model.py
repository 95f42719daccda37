"""Whole-model pulls through two real gateway replicas (two workers each) on one PostgreSQL, with boto3: a
model read in 8 parallel ranged GETs alternating between the replicas, retries included, fires once, naming
the justification of the grant used; reading the same 40 % again and again, on both replicas, does not."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from support.access import api
from support.observed import eventually, sample, scrape
from support.postgres import throwaway_cluster
from support.world import BUCKET, GatewayProcess, Identity, World, running_world

# A top-level prefix of its own: the bucket is shared with other modules, whose model-like files under
# models/ would change the catalogue's total.
AREA = "whole-model-e2e/"
MODEL = AREA + "llama/"
SHARD = 256 * 1024
SHARDS = [f"{MODEL}model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
WHY = "compare llama checkpoints on the eval set"
CONFIG = f"""
[policy.resources.models]
paths = ["s3://{BUCKET}/{AREA}"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
actions = ["read"]
instant_groups = ["ml"]
approver_groups = ["security"]

[anomalies.whole_model]
refresh_seconds = 1
"""


def log_records(world: World, *gateways: GatewayProcess) -> list[dict[str, Any]]:
    """What `gateways` (by default both replicas) logged."""
    return [
        json.loads(line)
        for gateway in gateways or (world.http, world.https)
        for line in Path(gateway.log_path).read_text().splitlines()
        if line.startswith("{")
    ]


def pulls(world: World, who: Identity, *gateways: GatewayProcess) -> list[dict[str, Any]]:
    return [
        r
        for r in log_records(world, *gateways)
        if r.get("event") == "anomaly_alert" and r.get("kind") == "whole_model" and r["principal"] == who.name
    ]


@pytest.fixture(scope="module")
def modelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The world's two gateways as two replicas of one deployment: one PostgreSQL store."""
    with (
        throwaway_cluster() as cluster,
        running_world(
            tmp_path_factory.mktemp("models"),
            extra_config=CONFIG,
            workers=2,
            store_url=cluster.create_database(),
        ) as world,
    ):
        upstream = world.upstream()
        for key in SHARDS:
            upstream.put_object(Bucket=BUCKET, Key=key, Body=secrets.token_bytes(SHARD))
        upstream.put_object(Bucket=BUCKET, Key=MODEL + "config.json", Body=b"{}")
        # Worker 0 of each gateway lists the resource every second: wait until both know the whole model.
        eventually(
            lambda: (
                sum(
                    r.get("event") == "models_listed" and r.get("bytes") == 4 * SHARD
                    for r in log_records(world)
                )
                == 2
            ),
            timeout=15,
        )
        yield world


def alerts_counted(world: World) -> float:
    """whole_model alerts in both replicas' metrics."""
    return sum(
        sample(scrape(g.control_url), "grantgate_anomaly_alerts_total", kind="whole_model")
        for g in (world.http, world.https)
    )


def reader(world: World) -> Identity:
    who = world.person(f"puller-{secrets.token_hex(4)}")
    world.grant(who, f"s3://{BUCKET}/{AREA}", "read")
    return who


def get_ranges(world: World, who: Identity, ranges: list[tuple[str, int, int]]) -> None:
    """Ranged GETs (key, first, last byte), 8 at a time, alternating between the two replicas, each body
    read whole. world.grant() waits for worker 0 only; worker 1 follows within a refresh, so a refusal is
    retried (refusals count nothing)."""
    replicas = [world.client(who), world.client(who, tls=True)]

    def get(numbered: tuple[int, tuple[str, int, int]]) -> int:
        n, (key, first, last) = numbered
        s3 = replicas[n % 2]

        def attempt() -> bytes | None:
            try:
                return bytes(
                    s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={first}-{last}")["Body"].read()
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "AccessDenied":
                    raise
                return None

        body = eventually(attempt, timeout=10, what="every worker to honour the new grant")
        assert len(body) == last - first + 1
        return len(body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(get, enumerate(ranges)))


def test_a_model_pulled_by_8_parallel_ranged_readers_over_two_replicas_fires_once(modelled: World) -> None:
    who = modelled.person(f"puller-{secrets.token_hex(4)}", ("ml",))
    counted = alerts_counted(modelled)
    asked = {"resource": f"s3://{BUCKET}/{AREA}", "actions": ["read"], "duration": "1h", "justification": WHY}
    status, granted = api(modelled, modelled.api_token(who), "POST", "/requests", asked)
    assert status == 201 and granted["status"] == "approved", granted
    half = SHARD // 2
    ranges = [(key, start, start + half - 1) for key in SHARDS for start in (0, half)]
    # 7 of 8 halves (87.5 %), alternating replicas, so neither replica saw more than half; plus three
    # retries of the same bytes, on the other replica than first time.
    get_ranges(modelled, who, ranges[:7] + ranges[1:4])
    [alert] = eventually(lambda: pulls(modelled, who), timeout=10)
    assert alert["details"]["model"] == f"s3://{BUCKET}/{MODEL}"
    assert alert["details"]["model_bytes"] == 4 * SHARD
    assert alert["details"]["bytes"] == 7 * half and alert["details"]["share"] == 0.875
    assert alert["details"]["grants"] == [{"id": granted["grant_id"], "justification": WHY}]
    assert alert["grant_id"] == granted["grant_id"] and WHY in alert["message"]

    # The other replica, shown more of the same pull, judges it over the line too, and says it was
    # raised already: it raises nothing.
    raiser = modelled.http if pulls(modelled, who, modelled.http) else modelled.https
    other = modelled.https if raiser is modelled.http else modelled.http
    get_ranges(modelled, who, [ranges[7]] * 2)

    def told() -> bool:
        return any(
            r.get("event") == "anomaly_already_raised" and r.get("principal") == who.name
            for r in log_records(modelled, other)
        )

    eventually(told, timeout=10, what="the other replica to judge the pull")
    assert len(pulls(modelled, who)) == 1
    assert alerts_counted(modelled) == counted + 1


def test_the_same_45_percent_read_on_both_replicas_does_not_fire(modelled: World) -> None:
    who = reader(modelled)
    # 1.8 of 4 shards, each range read on both replicas, twice: 180 % if repeats or replicas counted.
    forty_five = [(SHARDS[0], 0, SHARD - 1), (SHARDS[1], 0, SHARD * 8 // 10 - 1)]
    get_ranges(modelled, who, forty_five * 4)
    # Had they counted, this last 40 % would not be what crosses the line: the one alert's bytes show
    # every earlier read was counted once.
    rest = [(SHARDS[2], 0, SHARD - 1), (SHARDS[3], 0, SHARD * 6 // 10 - 1)]
    get_ranges(modelled, who, rest)
    [alert] = eventually(lambda: pulls(modelled, who), timeout=10)
    assert alert["details"]["bytes"] == SHARD + SHARD * 8 // 10 + SHARD + SHARD * 6 // 10
