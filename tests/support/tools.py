"""Command-line tools some tests drive (promtool, prometheus, node, buildah): CI installs them, so there a
missing one fails the test; on a laptop without it the test is skipped with the way to get it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def require(name: str, how: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed, and CI must have it: {how}")
    pytest.skip(f"{name} is not installed: {how}")


def helm() -> str:
    """Helm from `make helm` (into the virtualenv; Debian has none), else one on PATH."""
    local = Path(sys.prefix) / "bin" / "helm"
    return str(local) if local.exists() else require("helm", "run `make helm` (deploy/tools/install-helm.sh)")
