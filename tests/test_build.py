"""Which build runs: after `make compile` the compiled modules are the ones imported, and say so.

`make test` expects the pure build and `make test-compiled` the compiled one (GRANTGATE_EXPECT_BUILD);
run without either, the test of the expected build skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import build

EXPECTED = os.environ.get("GRANTGATE_EXPECT_BUILD")


@pytest.mark.skipif(EXPECTED is None, reason="GRANTGATE_EXPECT_BUILD (set by make) names the build to expect")
def test_the_expected_build_is_the_one_imported() -> None:
    if EXPECTED == "compiled":
        assert build.compiled_modules() == build.COMPILED
        assert build.stale_modules() == ()
        assert build.describe() == f"compiled by mypyc: {len(build.COMPILED)} modules"
    else:
        assert build.compiled_modules() == ()
        assert build.describe() == "pure Python"


def test_the_gateway_command_reports_the_build_it_imports() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("grantgate ")
    assert out.endswith(f"({build.describe()})\n")


def test_the_sources_handed_to_mypyc_are_the_modules_checked() -> None:
    assert build.source_files()[0] == "proxy/s3/request.py"
    assert len(build.source_files()) == len(build.COMPILED)
    root = Path(build.__file__).resolve().parents[1]
    assert all((root / path).is_file() for path in build.source_files())
