"""`grantgate serve` refuses to start on what it cannot use: one line on stderr, a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.world import ROOT, free_port

SECRET = "serve-startup-test-secret-0123456789abcdef"


def write_config(directory: Path, server: str = "", extra: str = "") -> Path:
    config = directory / "gateway.toml"
    lines = [f'secret_key = "{SECRET}"', f"s3_port = {free_port()}", f"control_port = {free_port()}"]
    set_here = {line.split("=")[0].strip() for line in server.splitlines() if "=" in line}
    lines = [line for line in lines if line.split("=")[0].strip() not in set_here] + server.splitlines()
    config.write_text(
        "[server]\n" + "\n".join(lines) + f'\n\n[store]\nurl = "sqlite:///{directory / "gg.db"}"\n' + extra
    )
    return config


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    """Run `serve`, which must give up by itself (a gateway that starts is a failure: the timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def refused(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process listens on the way a gateway does, with SO_REUSEPORT."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_serve_refuses_an_s3_port_another_process_holds(tmp_path: Path, held_port: int, workers: int) -> None:
    config = write_config(tmp_path, f"s3_port = {held_port}\nworkers = {workers}")
    refused(serve(config), f"cannot listen on 127.0.0.1:{held_port} (S3 port): the address is already in use")


def test_serve_on_a_busy_control_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = serve(write_config(tmp_path, f"control_port = {port}"))
    refused(done, "(control port): the address is already in use")
    assert str(port) in done.stderr


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_serve_with_a_missing_secret_key_file_says_so_in_one_line(tmp_path: Path, workers: int) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nsecret_key_file = "nowhere.key"\nworkers = {workers}\ns3_port = {free_port()}\n'
        f'control_port = {free_port()}\n[store]\nurl = "sqlite:///{tmp_path / "gg.db"}"\n'
    )
    refused(serve(config), f"[server] secret_key_file {tmp_path / 'nowhere.key'}: cannot read it")


def test_serve_with_missing_tls_files_says_so_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'tls_cert = "cert.pem"\ntls_key = "key.pem"')
    refused(serve(config), "[server] tls_cert")


def test_serve_with_a_bad_setting_says_so_in_one_line(tmp_path: Path) -> None:
    refused(serve(write_config(tmp_path, "s3_port = -1")), "server.s3_port")


def test_serve_with_an_unreadable_config_says_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_bytes(b"\xff\xfe not text")
    refused(serve(config), "cannot read it")
