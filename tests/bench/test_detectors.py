"""bench.detectors, small: it runs, and reports every part it times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_detectors_benchmark_reports_each_part() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.detectors", "--rounds", "2", "--events", "300", "--principals", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()[1:]
    assert [line[:16].strip() for line in lines] == [
        "decoy lookup",
        "observer on",
        "observer off",
        "flush",
        "flush ms",
        "rules (on-off)",
        "all detectors",
    ]
    assert all(float(line[16:].split()[0]) > 0 for line in lines)
