"""Each atheris harness in fuzz/ runs a few thousand coverage-guided inputs without a finding.

A finding (an exception other than S3Error, or a broken invariant) fails the test and prints the input
libFuzzer saved, so it can be replayed with `python -m fuzz.run TARGET <file>`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["sigv4", "sigv4-two-requests", "aws-chunked", "classifier", "xml-bodies", "grant-matching"]
RUNS = 3000


def test_every_harness_is_exercised_here() -> None:
    listed = subprocess.run(
        [sys.executable, "-c", "from fuzz.targets import TARGETS; print(' '.join(TARGETS))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(listed.stdout.split()) == sorted(TARGETS)


@pytest.fixture(scope="module")
def fuzzing(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[subprocess.Popen[str], Path]]]:
    """Every harness started at once (they are independent processes), each with its findings folder."""
    runs = {}
    for target in TARGETS:
        findings = tmp_path_factory.mktemp(f"fuzz-{target}")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fuzz.run",
                target,
                f"-runs={RUNS}",
                "-max_len=8192",
                "-rss_limit_mb=1024",  # bounded memory: libFuzzer fails the run if RSS grows past it
                "-seed=1",
                f"-artifact_prefix={findings}/",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        runs[target] = (proc, findings)
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_harness_finds_nothing_in_a_few_thousand_runs(
    target: str, fuzzing: dict[str, tuple[subprocess.Popen[str], Path]]
) -> None:
    proc, findings_dir = fuzzing[target]
    _, stderr = proc.communicate(timeout=300)
    findings = sorted(findings_dir.glob("*"))
    report = stderr[-3000:]
    assert proc.returncode == 0, f"{findings}\n{report}"
    assert f"Done {RUNS} runs" in stderr, report
    assert findings == []
