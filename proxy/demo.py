"""`grantgate demo`: a complete local set-up — an S3 emulator as the bucket, the gateway, three people.

Nothing else needs to be installed or running. State (config, SQLite, server key) lives in --state-dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from proxy.app import install_event_loop, serve, tune_malloc
from proxy.config import Settings, load_settings
from proxy.decoys.plant import plant
from proxy.observe.logging import configure_logging
from proxy.store.sql import SqlStore
from proxy.store.workflow import WorkflowStore

BUCKET = "secret-internal-model-archive"
MODEL_KEY = "models/llama-3-8b-instruct.Q4_K_M.gguf"
# A decoy: a shard nobody has a reason to read. Reading it suspends every grant of the reader.
DECOY_KEY = "models/llama-3-70b-instruct/model-00001-of-00030.safetensors"
DECOY_SIZE = 1024 * 1024
DATA_KEY = "training-data/rlhf-preferences-2026-10.jsonl"
UPSTREAM_KEY = "demo-upstream"  # the emulator accepts any credentials; callers never see these
PEOPLE: dict[str, list[str]] = {"alice": ["ml"], "bob": ["infra"], "carol": ["security"]}


def run_demo(
    s3_port: int = 9000,
    api_port: int = 9001,
    state_dir: str | Path = ".demo",
    credentials_out: str | Path | None = None,
) -> None:
    install_event_loop()
    tune_malloc()
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(_demo(s3_port, api_port, Path(state_dir), credentials_out))


async def _demo(s3_port: int, api_port: int, state_dir: Path, credentials_out: str | Path | None) -> None:
    from moto.server import ThreadedMotoServer

    emulator_port = _free_port()
    emulator = ThreadedMotoServer(ip_address="127.0.0.1", port=emulator_port, verbose=False)
    emulator.start()
    try:
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        _seed_bucket(emulator_url)
        config_path = _write_config(state_dir, s3_port, api_port, emulator_url)
        settings = load_settings(config_path)
        configure_logging(settings.log.level, settings.log.format)
        people = await _seed_people(settings.store_url(), settings.server_key())
        decoys = await _plant_decoys(settings)

        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = asyncio.create_task(serve(settings, settings.policy.build(), stop, ready))
        await asyncio.wait([server, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()  # surfaces the start-up error
        info = {
            "s3_endpoint": f"http://127.0.0.1:{s3_port}",
            "api_endpoint": f"http://127.0.0.1:{api_port}",
            "bucket": BUCKET,
            "principals": people,
            "decoys": decoys,
        }
        if credentials_out:
            out = Path(credentials_out)
            tmp = out.with_suffix(out.suffix + ".tmp")
            tmp.write_text(json.dumps(info, indent=2))
            os.chmod(tmp, 0o600)
            tmp.replace(out)  # appears whole, only once the gateway serves
        print(_instructions(info), flush=True)
        await server
    finally:
        emulator.stop()


def _seed_bucket(endpoint: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=UPSTREAM_KEY,
        aws_secret_access_key=UPSTREAM_KEY,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket=BUCKET)
    # A few MB shaped like a GGUF file: the magic, a version, then noise.
    model = b"GGUF" + (3).to_bytes(4, "little") + secrets.token_bytes(4 * 1024 * 1024)
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=model)
    rows = [{"prompt": f"question {i}", "chosen": "helpful", "rejected": "unhelpful"} for i in range(200)]
    s3.put_object(Bucket=BUCKET, Key=DATA_KEY, Body="\n".join(json.dumps(r) for r in rows).encode())


def _write_config(state_dir: Path, s3_port: int, api_port: int, emulator_url: str) -> Path:
    key_file = state_dir / "server.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        os.chmod(key_file, 0o600)
    config = state_dir / "grantgate.toml"
    config.write_text(
        f"""# Written by `grantgate demo`.
[server]
s3_host = "127.0.0.1"
s3_port = {s3_port}
control_host = "127.0.0.1"
control_port = {api_port}
public_url = "http://127.0.0.1:{api_port}"
secret_key_file = "server.key"

[upstream]
endpoint_url = "{emulator_url}"
region = "us-east-1"
access_key_id = "{UPSTREAM_KEY}"
secret_access_key = "{UPSTREAM_KEY}"

[store]
url = "sqlite:///grantgate.db"

[log]
format = "json"

[web]
# The demo's sign-in page lets you pick alice, bob or carol. Never enable this in production.
dev_login = true
{DEMO_POLICY}"""
    )
    return config


# The demo's policy, also the one the web page tests run under: alice (ml) needs one approval from
# security (carol); bob (infra) is approved instantly.
DEMO_POLICY = f"""
[policy]
pending_ttl = "24h"
admin_groups = ["security"]

[policy.resources.models]
description = "Model weights"
paths = ["s3://{BUCKET}/models/"]
decoys = ["s3://{BUCKET}/{DECOY_KEY}"]

[policy.resources.training-data]
description = "RLHF preference data"
paths = ["s3://{BUCKET}/training-data/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml", "infra", "security"]
actions = ["read", "list"]
default_duration = "2h"
max_duration = "8h"
justification_required = true
justification_min_length = 10
instant_groups = ["infra"]
approver_groups = ["security"]
approvals_required = 1

[[policy.rules]]
resource = "models"
requester_groups = ["infra"]
actions = ["read", "list", "write"]
default_duration = "1h"
max_duration = "8h"
instant_groups = ["infra"]
approvals_required = 0

[[policy.rules]]
resource = "training-data"
requester_groups = ["ml"]
actions = ["read", "list"]
default_duration = "1h"
max_duration = "4h"
justification_min_length = 20
approver_groups = ["security"]
approvals_required = 1
break_glass = true
"""


async def _seed_people(store_url: str, server_key: bytes) -> dict[str, Any]:
    now = datetime.now(UTC)
    store = await SqlStore.open(store_url, upgrade=True)
    try:
        people: dict[str, Any] = {}
        for name, groups in PEOPLE.items():
            await store.ensure_principal(name, groups)
            key, secret = await store.create_access_key(name, server_key, now=now, description="demo")
            _token, api_token = await WorkflowStore(store).create_token(name, now=now, description="demo")
            people[name] = {
                "access_key_id": key.access_key_id,
                "secret_access_key": secret,
                "api_token": api_token,
                "groups": groups,
            }
        return people
    finally:
        await store.close()


async def _plant_decoys(settings: Settings) -> list[str]:
    """Plant the demo's decoy as `grantgate decoys plant` would; its key, for the credentials file."""
    store = await SqlStore.open(settings.store_url(), upgrade=True)
    try:
        planted = await plant(settings, store, actor="demo", size=DECOY_SIZE)
    finally:
        await store.close()
    return [p.key for p in planted]


def installed_command(name: str, cwd: Path | None = None) -> str:
    """How to run a command this Python's environment installed (grantgate, aws): `make demo` puts
    neither on PATH, so the printed commands name the virtualenv's own, relative when it is below `cwd`."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        return name
    path = Path(found).absolute()
    try:
        relative = path.relative_to((cwd or Path.cwd()).absolute())
    except ValueError:
        return shlex.quote(str(path))
    return shlex.quote(f"./{relative}" if len(relative.parts) == 1 else str(relative))


def _instructions(info: dict[str, Any]) -> str:
    alice = info["principals"]["alice"]
    bob = info["principals"]["bob"]
    carol = info["principals"]["carol"]
    api = info["api_endpoint"]
    grantgate, aws = installed_command("grantgate"), installed_command("aws")
    return f"""
GrantGate demo is running.
  S3 endpoint : {info["s3_endpoint"]}      (bucket: {info["bucket"]})
  Control     : {api}      (JSON API under /api/v1)
  Web pages   : {api}/request      (sign in as alice, bob or carol: development sign-in)

alice (ml) has no grant yet, so she is refused with a link to request access:

  import boto3
  s3 = boto3.client("s3", endpoint_url="{info["s3_endpoint"]}",
                    aws_access_key_id="{alice["access_key_id"]}",
                    aws_secret_access_key="{alice["secret_access_key"]}")
  s3.get_object(Bucket="{info["bucket"]}", Key="{MODEL_KEY}")

She asks to read and list models/ (listing is its own action); carol (security) approves:

  export GRANTGATE_API_URL={api}
  GRANTGATE_TOKEN={alice["api_token"]} \\
    {grantgate} request s3://{info["bucket"]}/models/ --actions read,list --duration 2h \\
    -j "evaluate the new quantisation"
  GRANTGATE_TOKEN={carol["api_token"]} {grantgate} requests --inbox
  GRANTGATE_TOKEN={carol["api_token"]} {grantgate} approve REQUEST_ID -c "ok for the eval"

Once carol approved, alice's code above reads the model, and she can list models/:

  AWS_ACCESS_KEY_ID={alice["access_key_id"]} AWS_SECRET_ACCESS_KEY={alice["secret_access_key"]} \\
    {aws} --endpoint-url {info["s3_endpoint"]} s3 ls s3://{info["bucket"]}/models/

bob (infra) is approved instantly:

  GRANTGATE_TOKEN={bob["api_token"]} \\
    {grantgate} request models --actions read,list -j "debug inference start-up"
  AWS_ACCESS_KEY_ID={bob["access_key_id"]} AWS_SECRET_ACCESS_KEY={bob["secret_access_key"]} \\
    {aws} --endpoint-url {info["s3_endpoint"]} s3 ls s3://{info["bucket"]}/models/

Press Ctrl-C to stop.
"""


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
