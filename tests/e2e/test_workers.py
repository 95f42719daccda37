"""`[server] workers`: several gateway processes behind one S3 port, supervised by one parent."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from support.gateways import listening_sockets
from support.observed import audit_events, eventually, scrape
from support.world import BUCKET, GatewayProcess, Identity, World, free_port

from proxy.audit.store import StoredEvent

WORKERS = 2


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return sorted(int(p) for p in path.read_text().split()) if path.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def pool(world: World, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway with WORKERS workers on the world's store and bucket."""
    s3_port, control_port = free_port(), free_port()
    text = world.http.config.read_text()
    text = text.replace(f"s3_port = {world.http.s3_url.rpartition(':')[2]}", f"s3_port = {s3_port}", 1)
    text = text.replace(
        f"control_port = {world.http.control_url.rpartition(':')[2]}", f"control_port = {control_port}", 1
    )
    text = text.replace("workers = 1", f"workers = {WORKERS}", 1)
    config = world.directory / f"workers-{uuid.uuid4().hex[:8]}.toml"  # server.key is found next to it
    config.write_text(text)
    gateway = GatewayProcess(
        config, f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{control_port}", tmp_path / "workers.log"
    )
    gateway.start()
    assert gateway.proc is not None
    pid = gateway.proc.pid
    wait_for(lambda: len(children(pid)) == WORKERS and listening_sockets(s3_port) == WORKERS)
    try:
        yield gateway
    finally:
        gateway.stop()


def fresh_client(gateway: GatewayProcess, who: Identity):  # type: ignore[no-untyped-def]
    """A client whose connection is new, so the kernel picks a worker for it anew."""
    return boto3.client(
        "s3",
        endpoint_url=gateway.s3_url,
        aws_access_key_id=who.access_key_id,
        aws_secret_access_key=who.secret_access_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def error_code(client: Any, key: str) -> str:
    try:
        client.get_object(Bucket=BUCKET, Key=key)
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return "none"


def statuses(gateway: GatewayProcess, who: Identity, key: str, connections: int = 16) -> set[int]:
    out = set()
    for _ in range(connections):
        try:
            fresh_client(gateway, who).head_object(Bucket=BUCKET, Key=key)
            out.add(200)
        except ClientError as err:
            out.add(int(err.response["ResponseMetadata"]["HTTPStatusCode"]))
    return out


def test_every_worker_listens_on_the_one_s3_port_and_serves_granted_requests(
    world: World, pool: GatewayProcess
) -> None:
    who = world.person("worker-reader")
    world.grant(who, f"s3://{BUCKET}/workers/", "read")
    world.upstream().put_object(Bucket=BUCKET, Key="workers/a.txt", Body=b"hello")
    port = int(pool.s3_url.rpartition(":")[2])

    assert listening_sockets(port) == WORKERS
    wait_for(lambda: statuses(pool, who, "workers/a.txt", 4) == {200})
    assert statuses(pool, who, "workers/a.txt") == {200}
    body = fresh_client(pool, who).get_object(Bucket=BUCKET, Key="workers/a.txt")["Body"].read()
    assert body == b"hello"


def requests_counted(gateway: GatewayProcess, operation: str) -> float:
    """grantgate_s3_requests_total for `operation` on worker 0's /metrics, over every other label."""
    return sum(
        value
        for (name, labels), value in scrape(gateway.control_url).items()
        if name == "grantgate_s3_requests_total" and ("operation", operation) in labels
    )


def test_worker_0s_metrics_count_the_requests_every_worker_served(world: World, pool: GatewayProcess) -> None:
    who = world.person("worker-counted")
    world.grant(who, f"s3://{BUCKET}/counted/", "read")
    world.upstream().put_object(Bucket=BUCKET, Key="counted/a.txt", Body=b"counted")
    wait_for(lambda: statuses(pool, who, "counted/a.txt", 4) == {200})  # HEADs, so GETs count alone
    assert requests_counted(pool, "GetObject") == 0

    sent = 40  # on fresh connections: all on one worker of two has odds of 2**-40
    for _ in range(sent):
        body = fresh_client(pool, who).get_object(Bucket=BUCKET, Key="counted/a.txt")["Body"].read()
        assert body == b"counted"

    # Each request is counted once it has ended, a moment after the client has its last byte.
    wait_for(lambda: requests_counted(pool, "GetObject") >= sent)
    assert requests_counted(pool, "GetObject") == sent


def test_worker_0s_anomaly_rules_count_the_refusals_every_worker_saw(
    world: World, pool: GatewayProcess
) -> None:
    # 20 refusals in a minute is a burst (the default rule); spread over two workers, neither sees 20.
    who = world.person(f"worker-prober-{uuid.uuid4().hex[:6]}")
    refused = 0
    for _ in range(200):
        # Counted once a worker knows the new key: before its next refresh the caller is nobody yet
        # (InvalidAccessKeyId), a refusal of an address rather than of the principal.
        code = error_code(fresh_client(pool, who), "nothing-granted/a.txt")
        refused += code == "AccessDenied"
        if refused == 20:
            break
        if code != "AccessDenied":
            time.sleep(0.05)
    assert refused == 20

    def burst_alerts() -> list[StoredEvent]:
        return audit_events(world, kind="anomaly.denial_burst", principal=who.name)

    [alert] = eventually(burst_alerts, what="a denial-burst alert")
    assert alert.body["event"]["details"]["count"] == 20
    time.sleep(0.5)
    assert len(burst_alerts()) == 1  # raised once, by the one set of rules


def test_a_revoked_grant_is_refused_by_every_worker(world: World, pool: GatewayProcess) -> None:
    who = world.person("worker-revoked")
    grant = world.grant(who, f"s3://{BUCKET}/revoked/", "read")
    world.upstream().put_object(Bucket=BUCKET, Key="revoked/a.txt", Body=b"x")
    wait_for(lambda: statuses(pool, who, "revoked/a.txt", 8) == {200})

    world.revoke(grant)

    # Each worker refreshes from the store on its own; within a few intervals none may still allow it.
    wait_for(lambda: statuses(pool, who, "revoked/a.txt", 8) == {403})
    assert statuses(pool, who, "revoked/a.txt", 24) == {403}


def test_a_worker_that_dies_is_replaced(world: World, pool: GatewayProcess) -> None:
    assert pool.proc is not None
    parent = pool.proc.pid
    before = children(parent)
    os.kill(before[-1], signal.SIGKILL)

    wait_for(lambda: len(children(parent)) == WORKERS and children(parent) != before)
    assert before[0] in children(parent)  # the others were left alone
    port = int(pool.s3_url.rpartition(":")[2])
    wait_for(lambda: listening_sockets(port) == WORKERS)
    assert pool.proc.poll() is None


def test_sigterm_to_the_parent_stops_every_worker(world: World, pool: GatewayProcess) -> None:
    assert pool.proc is not None
    workers = children(pool.proc.pid)
    assert len(workers) == WORKERS

    pool.proc.terminate()

    assert pool.proc.wait(15) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
