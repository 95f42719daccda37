"""`grantgate demo` (what `make demo` runs) followed to the letter: each command it prints, run as printed.

A user's first five minutes with GrantGate are these instructions; a command in them that fails is a
broken product, whatever the other tests say.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from support.world import free_port

from proxy.demo import DECOY_KEY, MODEL_KEY, installed_command

BIN = Path(sys.executable).parent  # the virtualenv's grantgate and aws
START_TIMEOUT = 120.0


@dataclass
class Demo:
    text: str  # the instructions as printed
    env: dict[str, str]  # a user's shell after `make demo`: the virtualenv NOT on PATH, no AWS config
    cwd: Path  # where the demo was started, and the commands are pasted
    credentials: Path  # --credentials-out
    output: list[str]  # what it printed after its instructions (audit lines), as it prints it

    def block(self, heading: str) -> str:
        """The indented lines under the heading that starts with `heading`, dedented."""
        lines = self.text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 1
        end = next(
            (i for i in range(start, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines)
        )
        return textwrap.dedent("\n".join(lines[start:end])).strip()

    def commands(self, heading: str) -> list[str]:
        """The shell commands under a heading, continuation lines joined."""
        return self.block(heading).replace("\\\n", " ").splitlines()

    def shell(self, *commands: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", "set -e\n" + "\n".join(commands)],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60
        )


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "GRANTGATE_"))}
    outside = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()]
    env.update(PATH=os.pathsep.join(outside), HOME=str(home), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [
            str(BIN / "grantgate"),
            "demo",
            "--s3-port",
            str(free_port()),
            "--api-port",
            str(free_port()),
            "--state-dir",
            str(tmp_path / "state"),
            "--credentials-out",
            str(tmp_path / "credentials.json"),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    # A demo that never starts must fail the test, not hang it.
    watchdog = threading.Timer(START_TIMEOUT, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C to stop."):
                break
        watchdog.cancel()
        text = "".join(lines)
        assert "GrantGate demo is running." in text, f"the demo did not start:\n{text[-2000:]}"
        # The rest of its output (audit lines) must not fill the pipe and stall it.
        output: list[str] = []
        threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True).start()
        start = text.index("GrantGate demo is running.")
        yield Demo(text[start:], env, tmp_path, tmp_path / "credentials.json", output)
    finally:
        watchdog.cancel()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, "the demo did not stop cleanly on Ctrl-C"


def test_every_command_the_demo_prints_works_as_printed(demo: Demo) -> None:
    alice_reads = demo.block("alice (ml) has no grant yet")

    refused = demo.python(alice_reads)
    assert refused.returncode != 0
    assert "AccessDenied" in refused.stderr and "Request access at http://" in refused.stderr

    asking = demo.commands("She asks")
    *request_and_inbox, approve = asking
    asked = demo.shell(*request_and_inbox)
    assert asked.returncode == 0, asked.stderr
    request_id = re.search(r"Request (\S+) is pending", asked.stdout)
    assert request_id is not None, asked.stdout
    assert request_id.group(1) in asked.stdout.split("is pending", 1)[1], "carol's inbox lists it"
    assert "REQUEST_ID" in approve
    approved = demo.shell(asking[0], approve.replace("REQUEST_ID", request_id.group(1)))
    assert approved.returncode == 0, approved.stderr

    granted = demo.python(alice_reads)
    assert granted.returncode == 0, granted.stderr
    alice_lists = demo.shell(*demo.commands("Once carol approved"))
    assert alice_lists.returncode == 0, alice_lists.stderr
    assert MODEL_KEY.rsplit("/", 1)[1] in alice_lists.stdout

    listed = demo.shell(asking[0], *demo.commands("bob (infra)"))  # asking[0]: the API's address
    assert listed.returncode == 0, listed.stderr
    assert "Granted:" in listed.stdout
    assert MODEL_KEY.rsplit("/", 1)[1] in listed.stdout


def test_bob_reads_models_until_he_touches_the_demos_decoy(demo: Demo) -> None:
    info = json.loads(demo.credentials.read_text())
    assert info["decoys"] == [DECOY_KEY]
    asking = demo.commands("She asks")
    granted = demo.shell(asking[0], *demo.commands("bob (infra)"))
    assert granted.returncode == 0, granted.stderr
    assert "PRE llama-3-70b-instruct/" in granted.stdout  # the lure shows in his listing
    bob = info["principals"]["bob"]
    s3 = boto3.client(
        "s3",
        endpoint_url=info["s3_endpoint"],
        aws_access_key_id=bob["access_key_id"],
        aws_secret_access_key=bob["secret_access_key"],
        region_name="us-east-1",
    )
    assert s3.get_object(Bucket=info["bucket"], Key=MODEL_KEY)["Body"].read()
    assert s3.get_object(Bucket=info["bucket"], Key=DECOY_KEY)["Body"].read()[8:9] == b"{"  # safetensors
    touched = time.monotonic()
    while True:
        try:
            s3.head_object(Bucket=info["bucket"], Key=MODEL_KEY)
        except ClientError as err:
            assert err.response["Error"]["Code"] == "403"
            break
        assert time.monotonic() - touched < 1.0, "bob still reads models/ a second after the decoy"
        time.sleep(0.02)
    alerts = [
        json.loads(line)
        for line in list(demo.output)
        if '"anomaly_alert"' in line and '"decoy_touched"' in line
    ]
    assert [(a["principal"], a["details"]["decoy"]) for a in alerts] == [
        ("bob", f"s3://{info['bucket']}/{DECOY_KEY}")
    ]


def test_printed_commands_name_the_virtualenvs_programs() -> None:
    """`make demo` runs from the checkout and puts nothing on PATH: `.venv/bin/grantgate`, not `grantgate`."""
    venv_root = BIN.parent.parent
    assert installed_command("grantgate", cwd=venv_root) == f"{BIN.relative_to(venv_root)}/grantgate"
    assert installed_command("aws", cwd=Path("/nonexistent")) == str((BIN / "aws").absolute())


def test_demo_help_says_what_the_demo_is() -> None:
    shown = subprocess.run(
        [str(BIN / "grantgate"), "demo", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for word in ("S3 emulator", "alice", "bob", "carol", "approv"):
        assert word in shown
    assert "a user and a grant" not in shown
