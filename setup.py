"""Optional mypyc build of the data plane's pure modules (everything else is in pyproject.toml).

By default nothing is compiled: GrantGate is pure Python and installs wherever Python does. With
GRANTGATE_MYPYC=1 (`make compile`), the modules proxy/build.py names are compiled by mypyc from the same
typed source into extension modules beside their .py files, which Python imports in their place.
This needs a C compiler, the Python headers and mypy (the test extra has it).
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup

if os.environ.get("GRANTGATE_MYPYC") == "1":
    from mypyc.build import mypycify

    # By path: setup.py runs before the package is importable, and proxy/build.py imports nothing of it.
    build = runpy.run_path(str(Path(__file__).parent / "proxy" / "build.py"))
    # One shared library for the group, inside the package (by default it lands beside it, where an
    # installed or editable `proxy` cannot import it).
    setup(ext_modules=mypycify(build["source_files"](), opt_level="3", group_name="proxy.compiled"))
else:
    setup()
