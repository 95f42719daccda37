"""Whole-model pulls summed across replicas through the store, on SQLite and PostgreSQL: two gateways'
flushes of one pull add up, the alert is raised by one of them only, and it names the justifications."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError
from support.policies import MODELS_RULE
from support.postgres import throwaway_cluster

from proxy.access.policy import Policy, Resource, ResourcePath
from proxy.audit.resources import ResourceCatalog
from proxy.identity.principals import Principal
from proxy.observe.anomalies import Detectors, Finding
from proxy.observe.events import AnomalyAlert, EventBus, RequestEvent, Verdict
from proxy.observe.model_pulls import ModelPulls
from proxy.observe.models import KnownModels, ModelCatalog, find_models
from proxy.observe.settings import AnomalySettings
from proxy.store.model_reads import ModelReads
from proxy.store.sql import SqlStore
from proxy.workflow.service import Workflow

BUCKET = "archive"
SHARDS = [f"models/llama/model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
SHARD = 1000
CATALOG = ResourceCatalog.from_patterns({"models": [f"s3://{BUCKET}/models/"]})
POLICY = Policy(resources=(Resource("models", (ResourcePath(BUCKET, "models/"),)),), rules=(MODELS_RULE,))


class Replica:
    """What one gateway's worker 0 runs of the rule: its detectors and its flush to the shared store."""

    def __init__(self, store: SqlStore, clock: list[float], **rule: Any) -> None:
        settings = AnomalySettings.model_validate({"cooldown_seconds": 0, "whole_model": rule})
        listing = [(k, SHARD) for k in SHARDS]
        models = KnownModels(ModelCatalog.of(find_models(BUCKET, listing)))
        self.detectors = Detectors(settings, CATALOG, models=models)
        assert self.detectors.whole_model is not None
        self.raised: list[AnomalyAlert] = []

        def raise_alert(finding: Finding) -> AnomalyAlert:
            alert = self.detectors.responded(finding)
            self.raised.append(alert)
            return alert

        self.pulls = ModelPulls(self.detectors.whole_model, ModelReads(store), raise_alert, lambda: clock[0])

    def read(self, principal: str, key: str, start: int, length: int, grant: str) -> None:
        event = RequestEvent(
            request_id="R",
            started_at=0.0,
            source_ip="10.0.0.5",
            user_agent="boto3",
            method="GET",
            principal=principal,
            operation="GetObject",
            action="read",
            bucket=BUCKET,
            key=key,
            decision=Verdict.ALLOW,
            grant_ids=(grant,),
            status=206,
            bytes_out=length,
            range_start=start,
        )
        assert self.detectors.feed(event, 0.0) == []


async def granted(store: SqlStore, who: str, why: str) -> str:
    """A grant made by an instant request with justification `why`."""
    person = await store.ensure_principal(who, ["infra"])
    outcome = await Workflow(store, POLICY, EventBus()).request_access(
        Principal(person.name, person.groups), f"s3://{BUCKET}/models/", ["read"], "1h", why
    )
    assert outcome.grant is not None
    return outcome.grant.id


async def test_a_pull_split_over_two_replicas_fires_once_naming_the_justification(store: SqlStore) -> None:
    clock = [datetime.now(UTC).timestamp()]
    one, two = Replica(store, clock), Replica(store, clock)
    grant = await granted(store, "alice", "evaluate llama on the Q3 set")
    # Eight 500-byte ranges, alternating between the replicas, each asked twice: 100 % of the model,
    # though neither replica saw more than half of it.
    for i, (key, start) in enumerate((k, s) for k in SHARDS for s in (0, 500)):
        for _ in range(2):
            (one, two)[i % 2].read("alice", key, start, 500, grant)
    assert await one.pulls.flush() == []  # half of the model, so far
    [alert] = await two.pulls.flush()
    assert one.raised + two.raised == [alert]
    assert alert.details["model"] == f"s3://{BUCKET}/models/llama/"
    assert alert.details["bytes"] == 4 * SHARD and alert.details["share"] == 1.0
    assert alert.details["grants"] == [{"id": grant, "justification": "evaluate llama on the Q3 set"}]
    assert "evaluate llama on the Q3 set" in alert.message and alert.resource == "models"

    # More of the same pull, on either replica, raises nothing more within the window.
    one.read("alice", SHARDS[0], 0, 10, grant)
    two.read("alice", SHARDS[1], 0, 10, grant)
    assert await one.pulls.flush() == [] and await two.pulls.flush() == []


async def test_a_replica_tops_its_tally_up_with_what_the_other_flushed_since(store: SqlStore) -> None:
    clock = [datetime.now(UTC).timestamp()]
    one, two = Replica(store, clock), Replica(store, clock)
    one.read("frank", SHARDS[0], 0, SHARD, "g_1")  # 25 %
    assert await one.pulls.flush() == []
    clock[0] += 1
    two.read("frank", SHARDS[1], 0, SHARD, "g_1")
    two.read("frank", SHARDS[2], 0, SHARD // 2, "g_1")  # 62.5 %
    assert await two.pulls.flush() == []
    clock[0] += 1
    one.read("frank", SHARDS[2], SHARD // 2, SHARD // 2, "g_1")  # 75 %, on a tally built before
    assert await one.pulls.flush() == []
    one.read("frank", SHARDS[3], 0, SHARD // 2, "g_1")  # 87.5 %
    [alert] = await one.pulls.flush()
    assert alert.details["bytes"] == 3.5 * SHARD


async def test_replicas_that_both_saw_a_pull_and_flush_at_once_raise_one_alert(store: SqlStore) -> None:
    clock = [datetime.now(UTC).timestamp()]
    replicas = [Replica(store, clock) for _ in range(4)]
    for replica in replicas:
        for key in SHARDS:
            replica.read("erin", key, 0, SHARD, "g_1")
    raised = await asyncio.gather(*(r.pulls.flush() for r in replicas))
    assert sum(len(r) for r in raised) == 1


async def test_a_40_percent_read_over_two_replicas_does_not_fire(store: SqlStore) -> None:
    clock = [datetime.now(UTC).timestamp()]
    one, two = Replica(store, clock), Replica(store, clock)
    for round_ in range(3):  # the same 40 % again and again, on both replicas
        one.read("bob", SHARDS[0], 0, SHARD, "g_1")
        two.read("bob", SHARDS[1], 0, SHARD * 6 // 10, "g_1")
        assert await one.pulls.flush() == [] and await two.pulls.flush() == [], round_


async def test_a_new_pull_after_the_window_fires_again(store: SqlStore) -> None:
    clock = [datetime.now(UTC).timestamp()]
    replica = Replica(store, clock, window_seconds=60)
    for key in SHARDS:
        replica.read("carol", key, 0, SHARD, "g_1")
    assert len(await replica.pulls.flush()) == 1
    clock[0] += 61
    for key in SHARDS[:3]:
        replica.read("carol", key, 0, SHARD, "g_1")
    assert await replica.pulls.flush() == []  # 75 %: the earlier reads left the window
    replica.read("carol", SHARDS[3], 0, SHARD, "g_1")
    assert len(await replica.pulls.flush()) == 1


async def test_old_reads_are_pruned(store: SqlStore) -> None:
    reads = ModelReads(store)
    clock = [datetime.now(UTC).timestamp()]
    replica = Replica(store, clock, window_seconds=60)
    replica.read("dave", SHARDS[0], 0, 10, "g_1")
    await replica.pulls.flush()
    now = datetime.fromtimestamp(clock[0], UTC)
    assert len(await reads.read_since({"dave": now - timedelta(hours=1)})) == 1
    await reads.prune(now + timedelta(seconds=1))
    assert await reads.read_since({"dave": now - timedelta(hours=1)}) == []


async def test_ranges_read_while_the_database_is_down_are_kept_and_counted_once_it_is_back() -> None:
    """Regression: a flush that could not reach the store dropped that second's ranges, so a pull made
    during a short database outage went uncounted."""
    with throwaway_cluster() as cluster:  # its own server, to stop and start without disturbing others
        store = await SqlStore.open(cluster.create_database(), upgrade=True)
        try:
            clock = [datetime.now(UTC).timestamp()]
            replica, bounded = Replica(store, clock), Replica(store, clock)
            bounded.pulls.max_kept = 2
            replica.read("gina", SHARDS[0], 0, SHARD, "g_1")  # 25 %, flushed while all is well
            assert await replica.pulls.flush() == []
            cluster.stop()
            for key in SHARDS[1:]:  # the other 75 %, read during the outage
                replica.read("gina", key, 0, SHARD, "g_1")
                bounded.read("hank", key, 0, SHARD, "g_1")
            for _ in range(2):  # two flushes fail; neither loses what was read
                clock[0] += 1
                for failing in (replica, bounded):
                    with pytest.raises((DBAPIError, OSError)):
                        await failing.pulls.flush()
            assert bounded.pulls.dropped == 1  # memory is bounded: the oldest range went
            cluster.start()
            clock[0] += 1
            [alert] = await replica.pulls.flush()
            assert alert.details["bytes"] == 4 * SHARD and alert.details["share"] == 1.0
            assert replica.pulls.dropped == 0
        finally:
            await store.close()
