"""A real test world: moto's S3 server as the bucket, real gateway processes, a real SQLite store.

Tests drive it with real clients (boto3, the aws cli, pyarrow) over HTTP and HTTPS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config

from proxy.access.budgets import Budget, Usage
from proxy.access.grants import Grant, parse_actions, parse_resource
from proxy.store.budgets import BudgetLedger
from proxy.store.sql import SqlStore
from proxy.store.workflow import WorkflowStore
from support.certs import self_signed_cert
from support.gateway_config import write_gateway_config
from support.rawclient import RawClient

BUCKET = "secret-internal-model-archive"
UPSTREAM_KEY = "upstream-test-key"
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run store work to completion from sync code, even when a test's event loop is running."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, context: Any = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except Exception as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up: {last!r}")


@dataclass
class Identity:
    name: str
    access_key_id: str
    secret_access_key: str
    groups: tuple[str, ...] = ()


@dataclass
class GatewayProcess:
    config: Path
    s3_url: str
    control_url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--config", str(self.config), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            # Up once it answers; ready or not (a gateway whose bucket is down answers 503).
            wait_http(self.control_url + "/healthz")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gateway failed to start:\n{self.log_path.read_text()[-4000:]}") from None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """/readyz's status and body, whether ready (200) or not (503)."""
        try:
            with urllib.request.urlopen(self.control_url + "/readyz", timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def state_version(self) -> int:
        return int(self.readyz()[1]["state_version"])

    def events(self) -> list[dict[str, Any]]:
        """Every audit event the gateway has written so far."""
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "s3_request":
                    out.append(record)
        return out

    def event_for(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event["request_id"] == request_id:
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no audit event for request {request_id}")


@dataclass
class World:
    """Everything a test needs: the bucket, the gateways, and ways to create people and grants."""

    directory: Path
    store_url: str
    server_key: bytes
    upstream_url: str
    http: GatewayProcess
    https: GatewayProcess
    ca_bundle: Path
    _people: dict[str, Identity] = field(default_factory=dict)

    # ---- the bucket, seen directly (as the gateway's own credentials see it)

    def upstream(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.upstream_url,
            aws_access_key_id=UPSTREAM_KEY,
            aws_secret_access_key=UPSTREAM_KEY,
            region_name="us-east-1",
        )

    # ---- people, keys and grants, written to the store as the CLI would

    def person(self, name: str, groups: tuple[str, ...] = ()) -> Identity:
        if name not in self._people:
            self._people[name] = run_sync(self._create_person(name, groups))
        return self._people[name]

    async def _create_person(self, name: str, groups: tuple[str, ...]) -> Identity:
        store = await SqlStore.open(self.store_url)
        try:
            await store.ensure_principal(name, list(groups))
            key, secret = await store.create_access_key(name, self.server_key, now=datetime.now(UTC))
        finally:
            await store.close()
        self.sync()
        return Identity(name, key.access_key_id, secret, groups)

    def grant(
        self,
        who: Identity,
        resource: str,
        actions: str,
        *,
        ttl: timedelta | None = timedelta(hours=1),
        budget: Budget | None = None,
    ) -> Grant:
        bucket, prefix = parse_resource(resource)

        async def add() -> Grant:
            store = await SqlStore.open(self.store_url)
            try:
                now = datetime.now(UTC)
                return await store.add_grant(
                    who.name,
                    bucket,
                    prefix,
                    parse_actions(actions),
                    now=now,
                    expires_at=None if ttl is None else now + ttl,
                    created_by="test",
                    budget=budget,
                )
            finally:
                await store.close()

        grant = run_sync(add())
        self.sync()
        return grant

    def revoke(self, grant: Grant) -> None:
        async def revoke() -> None:
            store = await SqlStore.open(self.store_url)
            try:
                await store.revoke_grant(grant.id, now=datetime.now(UTC), actor="test", reason="test")
            finally:
                await store.close()

        run_sync(revoke())
        self.sync()

    def usage(self, grant: Grant) -> Usage:
        """What a budgeted grant has moved, as the store's ledger holds it."""

        async def read() -> Usage:
            store = await SqlStore.open(self.store_url)
            try:
                return (await BudgetLedger(store).usage([grant.id])).get(grant.id, Usage())
            finally:
                await store.close()

        return run_sync(read())

    def revoke_key(self, who: Identity) -> None:
        async def revoke() -> None:
            store = await SqlStore.open(self.store_url)
            try:
                await store.revoke_access_key(who.access_key_id, now=datetime.now(UTC))
            finally:
                await store.close()

        run_sync(revoke())
        self.sync()

    def api_token(self, who: Identity) -> str:
        """A new API token for `who` (Authorization: Bearer ...), as `grantgate tokens create` makes."""

        async def create() -> str:
            store = await SqlStore.open(self.store_url)
            try:
                _token, secret = await WorkflowStore(store).create_token(who.name, now=datetime.now(UTC))
                return secret
            finally:
                await store.close()

        return run_sync(create())

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until every gateway has loaded the store's current state."""

        async def current() -> int:
            store = await SqlStore.open(self.store_url)
            try:
                return await store.version()
            finally:
                await store.close()

        want = run_sync(current())
        deadline = time.monotonic() + timeout
        for gateway in (self.http, self.https):
            while gateway.state_version() < want:
                if time.monotonic() > deadline:
                    raise TimeoutError("gateway did not pick up the store's changes")
                time.sleep(0.05)

    # ---- clients

    def raw_client(self, who: Identity, *, tls: bool = False) -> RawClient:
        """A client that signs and sends exactly what it is told (bad signatures, odd paths, raw bodies)."""
        gateway = self.https if tls else self.http
        return RawClient(
            gateway.s3_url,
            who.access_key_id,
            who.secret_access_key,
            ca_bundle=self.ca_bundle if tls else None,
        )

    def client(
        self, who: Identity, *, tls: bool = False, checksums: str = "when_supported", **config: Any
    ) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.https.s3_url if tls else self.http.s3_url,
            aws_access_key_id=who.access_key_id,
            aws_secret_access_key=who.secret_access_key,
            region_name="us-east-1",
            verify=str(self.ca_bundle) if tls else None,
            config=Config(
                request_checksum_calculation=checksums,
                response_checksum_validation=checksums,
                retries={"max_attempts": 1, "mode": "standard"},
                **config,
            ),
        )


def _config(
    directory: Path,
    name: str,
    store_url: str,
    upstream_url: str,
    s3_port: int,
    control_port: int,
    tls: tuple[Path, Path] | None,
    extra_config: str = "",
    workers: int = 1,
) -> Path:
    return write_gateway_config(
        directory / f"{name}.toml",
        s3_port=s3_port,
        control_port=control_port,
        upstream_url=upstream_url,
        upstream_key=UPSTREAM_KEY,
        store_url=store_url,
        refresh_interval=0.1,
        workers=workers,  # 1 unless asked: tests wait on /readyz, whose state version is worker 0's alone
        server=f'tls_cert = "{tls[0]}"\ntls_key = "{tls[1]}"' if tls else "",
        sections=extra_config,
    )


@contextlib.contextmanager
def running_world(
    directory: Path, extra_config: str = "", workers: int = 1, store_url: str = ""
) -> Iterator[World]:
    """`extra_config`: more TOML sections for both gateways' configuration files; `workers`: processes
    per gateway (a world's sync() then only knows worker 0 has caught up); `store_url`: the store both
    gateways share (a PostgreSQL database, to run them as replicas), by default a SQLite file."""
    from moto.server import ThreadedMotoServer

    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    gateways: list[GatewayProcess] = []
    try:
        upstream_url = f"http://127.0.0.1:{moto_port}"
        server_key = secrets.token_urlsafe(48)
        (directory / "server.key").write_text(server_key)
        store_url = store_url or f"sqlite:///{directory / 'grantgate.db'}"
        run_sync(_init_store(store_url))
        cert, key = self_signed_cert(directory)
        for name, tls in (("http", None), ("https", (cert, key))):
            s3_port, control_port = free_port(), free_port()
            config = _config(
                directory, name, store_url, upstream_url, s3_port, control_port, tls, extra_config, workers
            )
            scheme = "https" if tls else "http"
            gateway = GatewayProcess(
                config,
                f"{scheme}://localhost:{s3_port}" if tls else f"http://127.0.0.1:{s3_port}",
                f"http://127.0.0.1:{control_port}",
                directory / f"{name}.log",
            )
            gateway.start()
            gateways.append(gateway)
        world = World(directory, store_url, server_key.encode(), upstream_url, gateways[0], gateways[1], cert)
        world.upstream().create_bucket(Bucket=BUCKET)
        yield world
    finally:
        for gateway in gateways:
            gateway.stop()
        moto.stop()


async def _init_store(url: str) -> None:
    store = await SqlStore.open(url, upgrade=True)
    await store.close()
