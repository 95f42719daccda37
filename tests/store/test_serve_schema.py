"""`grantgate serve` on PostgreSQL refuses a schema that is not at head, saying how to fix it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.postgres import PostgresCluster
from support.world import ROOT, free_port


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_serve_on_a_database_not_upgraded_exits_with_a_one_line_fix(
    postgres_cluster: PostgresCluster, tmp_path: Path, workers: int
) -> None:
    """With workers too: each worker fails the same way, and the parent stops rather than restarts them."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""[server]
workers = {workers}
secret_key = "serve-schema-test-secret-0123456789abcdef"
s3_port = {free_port()}
control_port = {free_port()}

[store]
url = "{postgres_cluster.create_database()}"
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "run `grantgate db upgrade`" in done.stderr
    assert "Traceback" not in done.stderr
    assert "worker_exited" not in done.stdout + done.stderr  # never restarted
