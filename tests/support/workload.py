"""Workload identity for tests: a token issuer with a JWKS served over local HTTP, and an STS-enabled gateway.

The issuer signs tokens shaped like Kubernetes projected service-account tokens with a test RSA key.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from proxy.store.sql import SqlStore
from support.gateway_config import write_gateway_config
from support.world import ROOT, UPSTREAM_KEY, GatewayProcess, World, free_port, run_sync, wait_http

AUDIENCE = "grantgate"
ROLE_ARN = "arn:aws:iam::000000000000:role/grantgate-workload"


@dataclass
class Issuer:
    """An OIDC-style issuer: signing keys, a JWKS endpoint on loopback, and a way to mint tokens."""

    url: str
    keys: list[RSAKey | ECKey] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    fetches: int = 0

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/openid/v1/jwks"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.keys]}

    def rotate(self) -> RSAKey:
        key = RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:12], "use": "sig"})
        self.keys.append(key)
        return key

    def token(
        self,
        subject: str = "system:serviceaccount:ml:trainer",
        *,
        audience: str | list[str] = AUDIENCE,
        issuer: str | None = None,
        lifetime: int = 3600,
        issued_ago: int = 0,
        key: RSAKey | ECKey | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed token like a Kubernetes projected service-account token."""
        signing = key or self.keys[0]
        now = int(time.time()) - issued_ago
        namespace, _, account = subject.removeprefix("system:serviceaccount:").partition(":")
        claims: dict[str, Any] = {
            "iss": issuer or self.url,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
                "pod": {"name": f"{account}-pod", "uid": str(uuid.uuid4())},
            },
            **(extra or {}),
        }
        alg = "RS256" if isinstance(signing, RSAKey) else "ES256"
        return jwt.encode({"alg": alg, "kid": signing.kid}, claims, signing)


@contextlib.contextmanager
def running_issuer() -> Iterator[Issuer]:
    port = free_port()
    issuer = Issuer(f"http://127.0.0.1:{port}")
    issuer.rotate()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/openid/v1/jwks":
                self.send_error(404)
                return
            issuer.fetches += 1
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    issuer.server = server
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()


def sts_config(
    world: World, issuer: Issuer, directory: Path, *, max_session_seconds: int = 3600, sections: str = ""
) -> Path:
    """A gateway config on the world's store and bucket, with [sts] trusting `issuer`; `sections`: more
    whole TOML sections (a `[policy]`...)."""
    s3_port, control_port = free_port(), free_port()
    return write_gateway_config(
        directory / f"sts-gateway-{s3_port}.toml",
        s3_port=s3_port,
        control_port=control_port,
        upstream_url=world.upstream_url,
        upstream_key=UPSTREAM_KEY,
        store_url=world.store_url,
        secret_key_file=world.directory / "server.key",
        refresh_interval=0.1,
        workers=1,  # tests wait on /readyz, whose state version is worker 0's alone
        sections=f"""[sts]
enabled = true
default_session_seconds = 1800
max_session_seconds = {max_session_seconds}

[[sts.issuers]]
issuer = "{issuer.url}"
audiences = ["{AUDIENCE}"]
jwks_url = "{issuer.jwks_url}"
leeway_seconds = 5

[[sts.rules]]
issuer = "{issuer.url}"
subject = "system:serviceaccount:ml:*"
claims = {{ "kubernetes.io.namespace" = "ml" }}
groups = ["ml-jobs"]

[[sts.rules]]
issuer = "{issuer.url}"
subject = "pipeline-*"
principal = "ci:{{sub}}"
groups_claim = "groups"
"""
        + sections,
    )


@contextlib.contextmanager
def sts_gateway(
    world: World, issuer: Issuer, directory: Path, sections: str = ""
) -> Iterator[GatewayProcess]:
    config = sts_config(world, issuer, directory, sections=sections)
    text = config.read_text()
    s3_port = int(text.split("s3_port = ")[1].split("\n")[0])
    control_port = int(text.split("control_port = ")[1].split("\n")[0])
    gateway = GatewayProcess(
        config,
        f"http://127.0.0.1:{s3_port}",
        f"http://127.0.0.1:{control_port}",
        directory / f"sts-gateway-{s3_port}.log",
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def sync_gateway(world: World, gateway: GatewayProcess, timeout: float = 10.0) -> None:
    """Wait until `gateway` has loaded the store's current state (world.sync covers only its own two)."""

    async def current() -> int:
        store = await SqlStore.open(world.store_url)
        try:
            return await store.version()
        finally:
            await store.close()

    version = run_sync(current())
    deadline = time.monotonic() + timeout
    while gateway.state_version() < version:
        if time.monotonic() > deadline:
            raise TimeoutError("gateway did not pick up the store's changes")
        time.sleep(0.05)


@dataclass
class SidecarProcess:
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def running_sidecar(gateway: GatewayProcess, token_file: Path, directory: Path) -> Iterator[SidecarProcess]:
    """`grantgate sidecar` as a process, as in a pod: loopback listener, token from a file."""
    port = free_port()
    log_path = directory / f"sidecar-{port}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "sidecar",
                "--gateway",
                gateway.s3_url,
                "--token-file",
                str(token_file),
                "--listen",
                f"127.0.0.1:{port}",
                "--session-name",
                "trainer-pod-0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    sidecar = SidecarProcess(f"http://127.0.0.1:{port}", log_path, proc)
    try:
        try:
            wait_http(sidecar.url + "/_grantgate/readyz")
        except TimeoutError:
            raise RuntimeError(f"sidecar did not become ready:\n{sidecar.log()[-4000:]}") from None
        yield sidecar
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
