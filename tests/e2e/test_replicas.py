"""Two gateway replicas on one real PostgreSQL: shared state within a second, revocation that cuts
transfers in flight, and failing closed (with the audit trail spooled) while the database is down.

The bucket is a streaming stand-in (tests/support/streaming.py), so a download of hundreds of MB costs
no memory; the database is a throw-away cluster of this module's own, which the last test stops.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.gateway_config import write_gateway_config
from support.postgres import PostgresCluster, throwaway_cluster
from support.rawclient import RawClient
from support.streaming import StreamingUpstream
from support.world import UPSTREAM_KEY, GatewayProcess, Identity, free_port, run_sync

from proxy.access.budgets import Budget
from proxy.access.grants import Grant, parse_actions
from proxy.audit.store import AuditQuery, AuditStore
from proxy.s3.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD
from proxy.store.budgets import BudgetLedger
from proxy.store.sql import SqlStore, upgrade_database
from proxy.store.workflow import WorkflowStore

BUCKET = "replica-bucket"
# Polling alone would take up to 2 s to see a change: anything faster is the notification's doing.
REFRESH_SECONDS = 2.0
GRACE_SECONDS = 3.0
MIB = 1024 * 1024
DECOY = "bait/llama-3-70b-instruct/model-00001-of-00030.safetensors"
# Scheduled access: infra is granted at once, for a window that may start later.
WINDOWS_POLICY = f"""
[policy.resources.windows]
paths = ["s3://{BUCKET}/windows/"]

[[policy.rules]]
resource = "windows"
requester_groups = ["infra"]
actions = ["read"]
instant_groups = ["infra"]
approver_groups = ["security"]
justification_required = false
"""


@dataclass
class Replicas:
    directory: Path
    cluster: PostgresCluster
    store_url: str
    server_key: bytes
    upstream: StreamingUpstream
    a: GatewayProcess
    b: GatewayProcess

    def store(self, work: Any) -> Any:
        async def run() -> Any:
            store = await SqlStore.open(self.store_url)
            try:
                return await work(store)
            finally:
                await store.close()

        return run_sync(run())

    def person(self, name: str, groups: tuple[str, ...] = ()) -> Identity:
        async def create(store: SqlStore) -> Identity:
            await store.ensure_principal(name, groups)
            key, secret = await store.create_access_key(name, self.server_key, now=datetime.now(UTC))
            return Identity(name, key.access_key_id, secret)

        identity = self.store(create)
        self.sync()
        return identity

    def grant(self, who: Identity, prefix: str, actions: str = "read", budget: Budget | None = None) -> Grant:
        async def add(store: SqlStore) -> Grant:
            now = datetime.now(UTC)
            return await store.add_grant(
                who.name,
                BUCKET,
                prefix,
                parse_actions(actions),
                now=now,
                expires_at=now + timedelta(hours=1),
                budget=budget,
            )

        return self.store(add)

    def revoke(self, grant: Grant) -> tuple[float, float]:
        """Revoke; returns (monotonic, wall) time just before the revocation's transaction began."""

        async def revoke(store: SqlStore) -> tuple[float, float]:
            began = time.monotonic(), time.time()
            await store.revoke_grant(grant.id, now=datetime.now(UTC), actor="test", reason="test")
            return began

        return self.store(revoke)

    def revoke_key(self, who: Identity) -> tuple[float, float]:
        """Revoke `who`'s key; returns (monotonic, wall) time just before the transaction began."""

        async def revoke(store: SqlStore) -> tuple[float, float]:
            began = time.monotonic(), time.time()
            assert await store.revoke_access_key(who.access_key_id, now=datetime.now(UTC))
            return began

        return self.store(revoke)

    def sync(self) -> None:
        """Wait (up to a second) until both replicas have loaded the store's current version."""
        want = self.store(lambda store: store.version())
        for gateway in (self.a, self.b):
            wait_for(lambda gateway=gateway: gateway.state_version() >= want, 1.0, "replica in sync")

    def spooled_files(self) -> list[Path]:
        return [p for name in ("a", "b") for p in (self.directory / f"spool-{name}").rglob("*.json")]

    def stored_request_ids(self) -> list[str]:
        async def read(store: SqlStore) -> list[str]:
            events = await AuditStore(store).query(AuditQuery(kind="s3_request"))
            return [e.body["event"]["request_id"] for e in events]

        return self.store(read)


def _config(directory: Path, name: str, store_url: str, upstream_url: str) -> tuple[Path, int, int]:
    s3_port, control_port = free_port(), free_port()
    path = write_gateway_config(
        directory / f"{name}.toml",
        s3_port=s3_port,
        control_port=control_port,
        upstream_url=upstream_url,
        upstream_key=UPSTREAM_KEY,
        store_url=store_url,
        refresh_interval=REFRESH_SECONDS,
        server=f"state_grace_seconds = {GRACE_SECONDS}",
        sections=(
            f'[audit]\nflush_interval_seconds = 0.2\nspool_dir = "spool-{name}"\n\n'
            f'[policy.resources.bait]\npaths = ["s3://{BUCKET}/bait/"]\ndecoys = ["s3://{BUCKET}/{DECOY}"]\n\n'
            + WINDOWS_POLICY
        ),
    )
    return path, s3_port, control_port


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    directory = tmp_path_factory.mktemp("replicas")
    upstream = StreamingUpstream()
    upstream.start()
    gateways: list[GatewayProcess] = []
    with throwaway_cluster() as cluster:
        try:
            store_url = cluster.create_database()
            run_sync(upgrade_database(store_url))
            server_key = "replica-test-server-key-" + "k" * 40
            (directory / "server.key").write_text(server_key)
            for name in ("a", "b"):
                config, s3_port, control_port = _config(directory, name, store_url, upstream.url)
                gateway = GatewayProcess(
                    config,
                    f"http://127.0.0.1:{s3_port}",
                    f"http://127.0.0.1:{control_port}",
                    directory / f"{name}.log",
                )
                gateway.start()
                gateways.append(gateway)
            yield Replicas(directory, cluster, store_url, server_key.encode(), upstream, *gateways)
        finally:
            for gateway in gateways:
                gateway.stop()
            upstream.stop()


# ---------------------------------------------------------------- clients


def _client(gateway: GatewayProcess, who: Identity) -> RawClient:
    return RawClient(gateway.s3_url, who.access_key_id, who.secret_access_key, timeout=10)


def get(gateway: GatewayProcess, who: Identity, key: str) -> tuple[int, str | None, str | None]:
    """(status, S3 error code, request id) of a GET of `key`."""
    response = _client(gateway, who).request("GET", f"/{BUCKET}/{key}")
    return response.status, response.error_code, response.request_id


def readyz(gateway: GatewayProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(gateway.control_url + "/readyz", timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    """Seconds until `predicate()` held, polled every 10 ms."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start


@dataclass
class SlowDownload:
    """A GET read slowly (256 KiB every 20 ms, about 12 MiB/s) in a thread, until it ends or is cut."""

    received: int = 0
    ended_at: float | None = None
    ending: str = ""
    status: int = 0
    request_id: str = ""

    def run(self, client: RawClient, path: str) -> None:
        signed = client.sign("GET", path, payload_hash=EMPTY_SHA256)
        conn = http.client.HTTPConnection("127.0.0.1", int(client.host.rpartition(":")[2]), timeout=10)
        try:
            conn.request("GET", path, headers=signed.headers)
            resp = conn.getresponse()
            self.status = resp.status
            self.request_id = resp.getheader("x-grantgate-request-id", "")
            while True:
                piece = resp.read(256 * 1024)
                if not piece:
                    self.ending = "complete" if resp.length in (0, None) else "eof"
                    break
                self.received += len(piece)
                time.sleep(0.02)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            self.ending = type(exc).__name__
        finally:
            self.ended_at = time.monotonic()
            conn.close()


# ---------------------------------------------------------------- shared state


def test_a_grant_written_once_is_seen_by_both_replicas_within_a_second(replicas: Replicas) -> None:
    alice = replicas.person("alice")
    for round_ in range(3):
        key = f"shared-{round_}/object"
        assert get(replicas.b, alice, key)[:2] == (403, "AccessDenied")
        grant = replicas.grant(alice, f"shared-{round_}/")
        granted_at = time.monotonic()
        for gateway in (replicas.b, replicas.a):
            wait_for(
                lambda gateway=gateway, key=key: get(gateway, alice, key)[0] == 200, 1.0, "grant visible"
            )
        # Well under the 2 s poll interval: the change notification woke both replicas.
        assert time.monotonic() - granted_at < 1.0

        revoked_at = replicas.revoke(grant)[0]
        for gateway in (replicas.a, replicas.b):
            wait_for(
                lambda gateway=gateway, key=key: get(gateway, alice, key)[0] == 403, 1.0, "revocation visible"
            )
        assert time.monotonic() - revoked_at < 1.0


@pytest.mark.parametrize("revoked", ["grant", "access key"])
def test_revoking_cuts_a_download_in_flight_on_the_other_replica(replicas: Replicas, revoked: str) -> None:
    bob = replicas.person("bob")
    grant = replicas.grant(bob, "big/")
    replicas.sync()
    download = SlowDownload()
    reader = threading.Thread(
        target=download.run, args=(_client(replicas.b, bob), f"/{BUCKET}/big/weights.bin"), daemon=True
    )
    reader.start()
    wait_for(lambda: download.received >= 8 * MIB, 10.0, "download under way")
    assert download.status == 200 and download.ended_at is None

    # Through the store, as replica A's API would.
    revoked_at, revoked_wall = replicas.revoke(grant) if revoked == "grant" else replicas.revoke_key(bob)
    reader.join(10)
    assert download.ended_at is not None, "the download was not stopped"
    assert download.ending != "complete"
    assert download.received < replicas.upstream.big_size // 2

    event = replicas.b.event_for(download.request_id)
    assert event["outcome"] == "revoked"
    assert event["bytes_out"] < replicas.upstream.big_size
    # The gateway cut the connection within a second (its event ends when it did) ...
    cut_after = event["started_at"] + event["duration_ms"] / 1000 - revoked_wall
    assert cut_after < 1.0, f"the gateway went on for {cut_after:.2f} s after revocation"
    # ... and the client, which first reads what the sockets still held, saw the end soon after.
    seen_after = download.ended_at - revoked_at
    assert seen_after < 2.0, f"the client read on for {seen_after:.2f} s after revocation"


def test_a_decoy_read_on_one_replica_suspends_and_cuts_the_readers_transfers_on_the_other(
    replicas: Replicas,
) -> None:
    dora = replicas.person("dora")
    replicas.grant(dora, "big/")
    replicas.grant(dora, "bait/")
    replicas.grant(dora, "notes/")
    replicas.sync()
    assert get(replicas.b, dora, "notes/readme.txt")[0] == 200
    download = SlowDownload()
    reader = threading.Thread(
        target=download.run, args=(_client(replicas.b, dora), f"/{BUCKET}/big/weights.bin"), daemon=True
    )
    reader.start()
    wait_for(lambda: download.received >= 8 * MIB, 10.0, "download under way")

    touched_wall, touched_at = time.time(), time.monotonic()
    assert get(replicas.a, dora, DECOY)[0] == 200  # the decoy answers as any object does
    # Replica B refuses her next read of a real object within a second ...
    wait_for(lambda: get(replicas.b, dora, "notes/readme.txt")[0] == 403, 1.0, "suspension visible on B")
    assert time.monotonic() - touched_at < 1.0
    # ... and cut the download it was serving her.
    reader.join(10)
    assert download.ended_at is not None and download.ending != "complete"
    event = replicas.b.event_for(download.request_id)
    assert event["outcome"] == "revoked"
    cut_after = event["started_at"] + event["duration_ms"] / 1000 - touched_wall
    assert cut_after < 1.5, f"the download went on for {cut_after:.2f} s after the decoy was read"
    # One alert, on the replica that saw the touch, naming her and the decoy.
    alerts = [
        json.loads(line)
        for line in replicas.a.log_path.read_text().splitlines()
        if line.startswith("{") and '"anomaly_alert"' in line and '"decoy_touched"' in line
    ]
    assert [(a["principal"], a["details"]["decoy"]) for a in alerts] == [("dora", f"s3://{BUCKET}/{DECOY}")]


def test_revoking_a_grant_fails_an_upload_in_flight_before_its_last_byte(replicas: Replicas) -> None:
    carol = replicas.person("carol")
    grant = replicas.grant(carol, "uploads/", "read,write")
    key = "uploads/slow.bin"
    wait_for(lambda: get(replicas.b, carol, key)[0] == 200, 1.0, "grant visible")
    size, piece = 64 * MIB, b"u" * (256 * 1024)
    client = _client(replicas.b, carol)
    path = f"/{BUCKET}/{key}"
    signed = client.sign("PUT", path, headers={"content-length": str(size)}, payload_hash=UNSIGNED_PAYLOAD)
    conn = http.client.HTTPConnection("127.0.0.1", int(client.host.rpartition(":")[2]), timeout=10)
    sent, revoked_at = 0, None
    try:
        conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
        for name, value in signed.headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < size:
                conn.send(piece)
                sent += len(piece)
                if sent == 8 * MIB:
                    revoked_at = replicas.revoke(grant)[0]
                time.sleep(0.02)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert revoked_at is not None
    assert response.status == 403 and b"<Code>AccessDenied</Code>" in body
    upload = replicas.upstream.uploads[key]
    assert not upload.complete and upload.received < size, "the object reached the bucket whole"
    assert upload.ended_at is not None
    cut_after = upload.ended_at - revoked_at
    assert cut_after < 1.0, f"the upload went on for {cut_after:.2f} s after revocation"
    assert replicas.b.event_for(response.getheader("x-grantgate-request-id", ""))["outcome"] == "revoked"


# ---------------------------------------------------------------- the database goes away (runs last)


def test_a_byte_budget_holds_across_two_replicas_downloading_at_once(replicas: Replicas) -> None:
    """Two downloads of the same grant, one on each replica, draw on one budget in the store: together
    they receive no more than it allows, both are cut, and the next read on either replica is refused."""
    carol = replicas.person("carol-budget")
    limit = 40 * MIB + 1234
    grant = replicas.grant(carol, "big/", budget=Budget(max_bytes=limit))
    replicas.sync()
    downloads = [SlowDownload(), SlowDownload()]
    readers = [
        threading.Thread(target=d.run, args=(_client(g, carol), f"/{BUCKET}/big/w{n}.bin"), daemon=True)
        for n, (d, g) in enumerate(zip(downloads, (replicas.a, replicas.b), strict=True))
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(30)
    assert all(d.status == 200 and d.ending not in ("", "complete") for d in downloads)
    assert sum(d.received for d in downloads) <= limit
    used = replicas.store(lambda store: BudgetLedger(store).usage([grant.id]))[grant.id]
    assert used.bytes == sum(d.received for d in downloads) == limit
    replicas.sync()
    for gateway in (replicas.a, replicas.b):
        assert get(gateway, carol, "big/again.bin")[:2] == (403, "AccessDenied")


def test_without_the_database_replicas_serve_within_grace_then_fail_closed_and_spool_audit(
    replicas: Replicas,
) -> None:
    dave = replicas.person("dave")
    replicas.grant(dave, "granted/")
    wait_for(lambda: get(replicas.b, dave, "granted/x")[0] == 200, 1.0, "grant visible")
    assert readyz(replicas.a)[0] == readyz(replicas.b)[0] == 200

    async def api_token(store: SqlStore) -> str:
        return (await WorkflowStore(store).create_token("dave", now=datetime.now(UTC)))[1]

    token = replicas.store(api_token)
    replicas.cluster.stop("fast")
    stopped_at = time.monotonic()
    outage: list[str] = []

    # Known fresh: the last state stays usable for the grace period, and still refuses what it refused.
    status, _code, request_id = get(replicas.b, dave, "granted/x")
    assert status == 200
    outage.append(request_id or "")
    status, code, request_id = get(replicas.b, dave, "elsewhere/x")
    assert (status, code) == (403, "AccessDenied")
    outage.append(request_id or "")

    for gateway in (replicas.a, replicas.b):
        wait_for(lambda gateway=gateway: readyz(gateway)[0] == 503, REFRESH_SECONDS + 1.0, "readyz 503")
        assert readyz(gateway)[1]["store"] == "unreachable"

    # Control-plane writes fail with a clear error, and nothing is half-applied (one transaction each).
    api = urllib.request.Request(
        replicas.a.control_url + "/api/v1/requests",
        data=b'{"resource": "s3://replica-bucket/x/", "actions": ["read"]}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(api, timeout=10)
    assert refused.value.code == 503
    assert json.loads(refused.value.read())["type"] == "urn:grantgate:problem:store_unavailable"

    # Past the grace period nothing is allowed, granted or not, on either replica.
    time.sleep(max(0.0, stopped_at + GRACE_SECONDS + 0.2 - time.monotonic()))
    for gateway in (replicas.a, replicas.b):
        for key in ("granted/x", "elsewhere/x"):
            status, code, request_id = get(gateway, dave, key)
            assert (status, code) == (503, "ServiceUnavailable")
            outage.append(request_id or "")
    assert all(outage)
    time.sleep(0.5)  # let the audit writers try (and spool) their batches
    assert replicas.spooled_files(), "nothing was spooled while the database was down"

    replicas.cluster.start()
    for gateway in (replicas.a, replicas.b):
        wait_for(lambda gateway=gateway: readyz(gateway)[0] == 200, 10.0, "readyz back to 200")
    assert get(replicas.b, dave, "granted/x")[0] == 200

    wait_for(lambda: not replicas.spooled_files(), 15.0, "spools drained")
    logged = [e["request_id"] for gw in (replicas.a, replicas.b) for e in gw.events()]

    def all_stored() -> bool:
        return len(replicas.stored_request_ids()) >= len(logged)

    wait_for(all_stored, 10.0, "every logged request stored")
    stored = replicas.stored_request_ids()
    # None lost, none duplicated: the stored trail is exactly what both replicas logged.
    assert sorted(stored) == sorted(logged)
    assert len(set(stored)) == len(stored)
    assert set(outage) <= set(stored)


def test_a_scheduled_window_opens_and_closes_on_both_replicas_within_a_second(replicas: Replicas) -> None:
    """Approved ahead on replica A; each replica opens the window at its start and closes it at its end
    on its own clock, with no change in the store at either moment to wake it."""
    erin = replicas.person("erin", ("infra",))

    async def api_token(store: SqlStore) -> str:
        return (await WorkflowStore(store).create_token("erin", now=datetime.now(UTC)))[1]

    token = replicas.store(api_token)
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    body = {"resource": f"s3://{BUCKET}/windows/", "duration": "3s", "starts_at": starts.isoformat()}
    request = urllib.request.Request(
        replicas.a.control_url + "/api/v1/requests",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        created = json.load(resp)
    assert created["status"] == "approved" and created["grant"]["active"] is False, created
    replicas.sync()
    for gateway in (replicas.a, replicas.b):
        assert get(gateway, erin, "windows/x")[:2] == (403, "AccessDenied")

    def lateness(moment: datetime, wanted: int) -> list[float]:
        """Seconds past `moment` until each replica answered `wanted`."""
        late = []
        for gateway in (replicas.b, replicas.a):
            wait_for(lambda gateway=gateway: get(gateway, erin, "windows/x")[0] == wanted, 6.0, f"{wanted}")
            late.append((datetime.now(UTC) - moment).total_seconds())
        return late

    opened = lateness(starts, 200)
    assert all(0.0 <= late < 1.0 for late in opened), f"the window opened early or late: {opened}"
    closed = lateness(starts + timedelta(seconds=3), 403)
    assert all(0.0 <= late < 1.0 for late in closed), f"the window closed early or late: {closed}"
