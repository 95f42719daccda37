"""`python -m fuzz.run TARGET [libFuzzer flags]`: fuzz one target of fuzz.targets with atheris.

Examples: `python -m fuzz.run aws-chunked -max_total_time=60`, `python -m fuzz.run sigv4 -runs=5000`.
A crash (any exception but S3Error, or a broken invariant) leaves its input in ./crash-*.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import proxy.access.decide
    import proxy.access.grants
    import proxy.access.index
    import proxy.s3.addressing
    import proxy.s3.chunked
    import proxy.s3.operations
    import proxy.s3.request
    import proxy.s3.sigv4
    import proxy.s3.xmlbodies  # noqa: F401  (imported to be instrumented)

from fuzz.targets import TARGETS, run_one


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.run {{{'|'.join(TARGETS)}}} [libFuzzer flags]")
    name = argv[1]
    atheris.Setup([argv[0], *argv[2:]], lambda data: run_one(name, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
