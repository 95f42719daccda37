"""A world whose gateways audit to the store, export metrics and run anomaly rules with test thresholds.

Helpers read what they produce the way an operator would: /metrics, the audit store, the API.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from proxy.audit.store import AuditQuery, AuditStore, StoredEvent
from proxy.store.sql import SqlStore
from proxy.store.workflow import WorkflowStore
from support.world import BUCKET, Identity, World, run_sync, running_world

T = TypeVar("T")
EXFILTRATION_BYTES = 3_000_000

CONFIG = f"""
[audit]
flush_interval_seconds = 0.1

[metrics]
per_principal = true

[metrics.resources]
datasets = ["s3://{BUCKET}/datasets/"]

[anomalies]
cooldown_seconds = 60

[anomalies.exfiltration]
window_seconds = 120
threshold_bytes = {EXFILTRATION_BYTES}
response = "suspend"

[anomalies.outside_network.networks]
"s3://{BUCKET}/datasets/" = ["10.0.0.0/8", "fd00::/8"]

[anomalies.denial_burst]
window_seconds = 30
threshold = 5

[policy]
admin_groups = ["security"]

[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]

[policy.resources.restricted]
paths = ["s3://{BUCKET}/restricted/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
instant_groups = ["ml"]
approver_groups = ["security"]
justification_required = false

[[policy.rules]]
resource = "restricted"
requester_groups = ["ml"]
instant_groups = ["ml"]
approver_groups = ["security"]
justification_required = false
source_cidrs = ["192.168.0.0/16"]

[[policy.standing]]
principal = "inference-server"
resource = "models"
actions = ["read"]
"""


@contextlib.contextmanager
def observed_world(directory: Path, workers: int = 1) -> Iterator[World]:
    with running_world(directory, extra_config=CONFIG, workers=workers) as world:
        yield world


def eventually(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(control_url: str, token: str | None = None) -> Samples:
    """Every sample a gateway exports: (name, sorted labels) -> value. `token`: the metrics bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(control_url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def audit_events(world: World, **query: Any) -> list[StoredEvent]:
    async def read() -> list[StoredEvent]:
        store = await SqlStore.open(world.store_url)
        try:
            return await AuditStore(store).query(AuditQuery(**query))
        finally:
            await store.close()

    return run_sync(read())


def with_audit(world: World, action: Callable[[AuditStore], Any]) -> Any:
    async def run() -> Any:
        store = await SqlStore.open(world.store_url)
        try:
            return await action(AuditStore(store))
        finally:
            await store.close()

    return run_sync(run())


def api_token(world: World, who: Identity) -> str:
    async def create() -> str:
        store = await SqlStore.open(world.store_url)
        try:
            _, token = await WorkflowStore(store).create_token(who.name, now=datetime.now(UTC))
            return token
        finally:
            await store.close()

    return run_sync(create())


def api(world: World, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        world.http.control_url + "/api/v1" + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
            kind = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        raw, status, kind = err.read(), err.code, err.headers.get("Content-Type", "")
    if "ndjson" in kind:
        return status, [json.loads(line) for line in raw.splitlines() if line.strip()]
    return status, json.loads(raw) if raw else None
