"""The load test, smaller: 200 concurrent connections for a few seconds (slow: `pytest -m slow`).

`python -m bench.load` is the full-size run (1000 connections); both fail on the same breaches.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_hundred_concurrent_connections_hold_every_invariant(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--connections",
            "200",
            "--seconds",
            "8",
            "--workdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    figures = dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line.strip())
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert figures["result"].strip() == "PASS"
    assert figures["errors"].strip() == "0"
    # Both kinds of denial were exercised, and got their 403 (any other answer would count as an error).
    assert "denied-get=" in figures["by"] and "denied-put=" in figures["by"]
    completed = int(figures["completed"].split()[0])
    assert completed > 200
    assert figures["audit"].split()[1] == str(completed)
