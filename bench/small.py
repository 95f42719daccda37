"""CPU per small request and latency at 1 connection, for one or more source trees of the gateway, in turn.

    python -m bench.small --tree new=. --tree old=/path/to/other/checkout [--rounds 5] [--seconds 3]
    python -m bench.small --tree on=. --tree off=. --sections on=bench/detectors-on.toml \
        --sections off=bench/detectors-off.toml

Each tree's gateway (`[server] workers = 1`, every check and observer on) runs in front of the same nginx
origin and store; wrk fetches a presigned 4 KiB GET at 1 and at 32 connections, the trees alternating
within each round so that machine noise hits them alike. CPU is the gateway process's user + system
time over the run (/proc), divided by the requests wrk completed. Medians and the spread (min-max).
`--sections NAME=FILE` appends FILE's TOML sections to that tree's configuration (one tree run twice
with and without a feature: bench/detectors-on.toml and -off.toml, the anomaly detectors).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.stream import BUCKET, LIST_BUCKETS, free_port, provision, running
from bench.suite import (
    _NGINX_ORIGIN,
    SMALL_KEY,
    Process,
    System,
    ensure_nginx_and_wrk,
    gateway_config,
    nginx_process,
    run_wrk,
    wait_port,
)

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


@dataclass
class Samples:
    cpu_us: dict[int, list[float]] = field(default_factory=dict)
    p50_us: dict[int, list[float]] = field(default_factory=dict)
    p99_us: dict[int, list[float]] = field(default_factory=dict)


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.small", description=__doc__)
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--sections", action="append", default=[], help="NAME=FILE: TOML for that tree")
    args = parser.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    sections = {name: Path(path).read_text() for name, path in (s.split("=", 1) for s in args.sections)}
    nginx, wrk = ensure_nginx_and_wrk()
    with tempfile.TemporaryDirectory(prefix="grantgate-small-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        (workdir / "origin" / BUCKET / SMALL_KEY).parent.mkdir(parents=True)
        (workdir / "origin" / BUCKET / SMALL_KEY).write_bytes(secrets.token_bytes(4096))
        server_key = secrets.token_urlsafe(48)
        (workdir / "server.key").write_text(server_key)
        store_url = f"sqlite:///{workdir / 'grantgate.db'}"
        creds = asyncio.run(provision(store_url, server_key.encode(), prefix="objects/"))
        origin_port = free_port()
        root = workdir / "origin"
        origin_conf = _NGINX_ORIGIN.format(port=origin_port, root=root, list_buckets=LIST_BUCKETS)
        origin = nginx_process(nginx, workdir, "nginx-origin", origin_conf)
        gateways: dict[str, tuple[Process, System]] = {}
        for name, path in trees.items():
            s3, control = free_port(), free_port()
            config = gateway_config(
                workdir, name, origin_port, s3, control, workers=1, sections=sections.get(name, "")
            )
            process = _TreeProcess(name, Path(path).resolve(), config, workdir / f"{name}.log")
            gateways[name] = (process, System(name, s3, s3, creds))
        samples = {name: Samples() for name in trees}
        with running([origin, *(p for p, _ in gateways.values())]):
            origin.start()
            wait_port(origin_port)
            for process, _system in gateways.values():
                process.start()
            for _process, system in gateways.values():
                _wait_s3(system)
            urls = {name: system.small_url() for name, (_p, system) in gateways.items()}
            for round_no in range(args.rounds):
                order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
                for conns in args.connections:
                    for name in order:
                        process = gateways[name][0]
                        before = cpu_seconds(process.pid)
                        result = run_wrk(wrk, urls[name], conns, args.seconds, via_gateway=False)
                        used = cpu_seconds(process.pid) - before
                        s = samples[name]
                        s.cpu_us.setdefault(conns, []).append(used * 1e6 / max(result.requests, 1))
                        s.p50_us.setdefault(conns, []).append(result.p50_us)
                        s.p99_us.setdefault(conns, []).append(result.p99_us)
                print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    print(f"median (min-max) over {args.rounds} rounds of {args.seconds} s; load {os.getloadavg()[0]:.1f}")
    print(f"{'tree':<8} {'conns':>5} {'CPU us/request':>22} {'p50 us':>22} {'p99 us':>22}")
    for name, s in samples.items():
        for conns in args.connections:
            print(
                f"{name:<8} {conns:>5} {_fmt(s.cpu_us[conns]):>22} {_fmt(s.p50_us[conns]):>22} "
                f"{_fmt(s.p99_us[conns]):>22}"
            )


class _TreeProcess(Process):
    """`grantgate serve` run from a given source tree (its own `proxy` package first on the path)."""

    def __init__(self, name: str, tree: Path, config: Path, log: Path) -> None:
        super().__init__(name, [sys.executable, "-m", "proxy", "--config", str(config), "serve"], log)
        self.tree = tree

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, cwd=self.tree)


def _wait_s3(system: System, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait_port(system.get_port, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise


if __name__ == "__main__":
    main()
