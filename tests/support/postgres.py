"""A throw-away PostgreSQL server for tests: initdb in a temporary directory, started and stopped at will.

Found on PATH or in Debian's /usr/lib/postgresql/*/bin. When the tests run as root, the server runs as
the `postgres` user (PostgreSQL refuses root). `GRANTGATE_REQUIRE_POSTGRES=1` (set by CI) turns a
missing server into a failure instead of a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def postgres_bin_dir() -> Path | None:
    found = shutil.which("initdb")
    candidates = [found] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    for candidate in candidates:
        bin_dir = Path(candidate).resolve().parent
        if (bin_dir / "pg_ctl").exists() and (bin_dir / "postgres").exists():
            return bin_dir
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.data = root / "data"
        self.port = _free_port()
        self.log = root / "postgres.log"
        self.user: dict[str, int] = {}
        if os.geteuid() == 0:  # postgres refuses to run as root
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to start PostgreSQL as")
            self.user = {"user": entry.pw_uid, "group": entry.pw_gid}
            shutil.chown(root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **self.user)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        """Create the cluster (first time only) and start the server; waits until it accepts connections."""
        if not self.data.exists():
            self._run(
                str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N"
            )
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self) -> str:
        name = "gg_" + uuid.uuid4().hex[:12]
        self._run(
            str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[PostgresCluster]:
    """A started cluster, removed afterwards; skips (or fails under CI) when PostgreSQL is missing."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        if os.environ.get("GRANTGATE_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (GRANTGATE_REQUIRE_POSTGRES) but initdb was not found")
        pytest.skip("PostgreSQL is not installed")
    # Not under pytest's tmp_path: its parents are private to the current user, and PostgreSQL may run
    # as another one.
    root = Path(tempfile.mkdtemp(prefix="grantgate-pg-"))
    cluster = PostgresCluster(bin_dir, root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
