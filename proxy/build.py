"""Which build of the data plane's pure modules is running: pure Python, or compiled by mypyc.

`make compile` (setup.py with GRANTGATE_MYPYC=1) compiles the modules named here from their typed
source into extension modules beside the .py files, which Python then imports in their place. Without
a C compiler nothing changes: the .py files are the build. `grantgate --version` and the
`gateway_started` log line say which one runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# The per-request pure work (bench/pure.py measures what compiling each step buys): SigV4, aws-chunked
# decoding, classification, the grant decision and its index. Audit record building was measured too
# and left out: its time is orjson's and datetime's, already C.
COMPILED = (
    "proxy.s3.request",
    "proxy.s3.sigv4",
    "proxy.s3.checksums",
    "proxy.s3.chunked",
    "proxy.s3.addressing",
    "proxy.s3.operations",
    "proxy.access.grants",
    "proxy.access.decide",
    "proxy.access.index",
)
_EXTENSIONS = (".so", ".pyd")


def source_files() -> list[str]:
    """The modules' sources, relative to the project root (what setup.py hands to mypyc)."""
    return [name.replace(".", "/") + ".py" for name in COMPILED]


def compiled_modules() -> tuple[str, ...]:
    """The modules of COMPILED this interpreter imports from an extension module (imports them all)."""
    return tuple(name for name in COMPILED if _origin(name).suffix in _EXTENSIONS)


def stale_modules() -> tuple[str, ...]:
    """Compiled modules whose .py source changed after they were built: the extension still runs."""
    stale = []
    for name in compiled_modules():
        built = _origin(name)
        source = built.with_name(name.rpartition(".")[2] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            stale.append(name)
    return tuple(stale)


def describe() -> str:
    """One phrase for logs and --version: "pure Python", "compiled by mypyc: 9 modules", or what is off."""
    compiled = compiled_modules()
    if not compiled:
        return "pure Python"
    if len(compiled) < len(COMPILED):
        pure = ", ".join(sorted(set(COMPILED) - set(compiled)))
        return f"partly compiled by mypyc: {len(compiled)} of {len(COMPILED)} modules, pure: {pure}"
    stale = stale_modules()
    if stale:
        return f"compiled by mypyc, STALE: {', '.join(stale)} changed since `make compile`"
    return f"compiled by mypyc: {len(compiled)} modules"


def _origin(name: str) -> Path:
    return Path(importlib.import_module(name).__file__ or "")
