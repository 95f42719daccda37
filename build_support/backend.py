"""The build backend: setuptools', asking for mypy too when GRANTGATE_MYPYC=1 wants the compiled build.

setup.py compiles the modules proxy/build.py names with mypyc only then; mypy type-checks them first,
so the isolated build environment also needs what they import with types (multidict) and the mypy
plugin pyproject.toml names (pydantic's).
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - every other hook is setuptools' own

_FOR_MYPYC = ["mypy>=1.10", "pydantic>=2.6", "multidict>=6"]


def _compiled() -> bool:
    return os.environ.get("GRANTGATE_MYPYC") == "1"


# setuptools answers these by running setup.py, which for the compiled build imports mypyc: not there
# yet, since this answer is what installs it. setup.py asks for nothing else (no setup_requires).
def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _FOR_MYPYC if _compiled() else _setuptools.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _FOR_MYPYC if _compiled() else _setuptools.get_requires_for_build_editable(config_settings)
