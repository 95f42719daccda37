"""Whole-model pulls through the real gateway (two workers) with boto3: a model read in 8 parallel ranged
GETs, retries included, fires once; reading the same 40 % again and again does not."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from support.observed import eventually
from support.world import BUCKET, Identity, World, running_world

# A top-level prefix of its own: the bucket is shared with other modules, whose model-like files under
# models/ would change the catalogue's total.
AREA = "whole-model-e2e/"
MODEL = AREA + "llama/"
SHARD = 256 * 1024
SHARDS = [f"{MODEL}model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
CONFIG = f"""
[policy.resources.models]
paths = ["s3://{BUCKET}/{AREA}"]

[anomalies.whole_model]
refresh_seconds = 1
"""


def log_records(world: World) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in (world.http.log_path, world.https.log_path)
        for line in Path(path).read_text().splitlines()
        if line.startswith("{")
    ]


def pulls(world: World, who: Identity) -> list[dict[str, Any]]:
    return [
        r
        for r in log_records(world)
        if r.get("event") == "anomaly_alert" and r.get("kind") == "whole_model" and r["principal"] == who.name
    ]


@pytest.fixture(scope="module")
def modelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("models"), extra_config=CONFIG, workers=2) as world:
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


def reader(world: World) -> Identity:
    who = world.person(f"puller-{secrets.token_hex(4)}")
    world.grant(who, f"s3://{BUCKET}/{AREA}", "read")
    return who


def get_ranges(world: World, who: Identity, ranges: list[tuple[str, int, int]]) -> None:
    """Ranged GETs (key, first, last byte), 8 at a time, each body read whole. world.grant() waits for
    worker 0 only; worker 1 follows within a refresh, so a refusal is retried (refusals count nothing)."""
    s3 = world.client(who)

    def get(item: tuple[str, int, int]) -> int:
        key, first, last = item

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
        list(pool.map(get, ranges))


def test_a_model_pulled_in_8_parallel_ranged_readers_fires_once(modelled: World) -> None:
    who = reader(modelled)
    half = SHARD // 2
    ranges = [(key, start, start + half - 1) for key in SHARDS for start in (0, half)]
    get_ranges(modelled, who, ranges + ranges[:3])  # three retries: the same bytes again
    [alert] = eventually(lambda: pulls(modelled, who), timeout=10)
    assert alert["details"]["model"] == f"s3://{BUCKET}/{MODEL}"
    assert alert["details"]["model_bytes"] == 4 * SHARD
    assert alert["details"]["bytes"] > 0.8 * 4 * SHARD
    assert alert["grant_id"] in alert["details"]["grant_ids"]


def test_reading_the_same_40_percent_again_and_again_does_not_fire(modelled: World) -> None:
    who = reader(modelled)
    forty = [(SHARDS[0], 0, SHARD - 1), (SHARDS[1], 0, SHARD * 6 // 10 - 1)]  # 1.6 of 4 shards
    get_ranges(modelled, who, forty * 4)  # 160 % if repeats counted
    # Had they counted, this last 45 % would not be what crosses the line: the one alert's bytes show
    # every earlier read was counted once.
    rest = [(SHARDS[2], 0, SHARD - 1), (SHARDS[3], 0, SHARD * 8 // 10 - 1)]
    get_ranges(modelled, who, rest)
    [alert] = eventually(lambda: pulls(modelled, who), timeout=10)
    assert alert["details"]["bytes"] == SHARD + SHARD * 6 // 10 + SHARD + SHARD * 8 // 10
