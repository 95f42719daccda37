"""Bounded load test: hundreds to a thousand concurrent connections through one gateway, on loopback.

`python -m bench.load [--connections 1000] [--seconds 30]` starts an in-memory origin and a real gateway
(SigV4, grants, re-signing, audit), drives a mix of small and large GETs, PUTs and denied requests for a
bounded time, then checks: no errors but the expected denials, gateway memory flat, file descriptors
back to their baseline, exactly one audit event per completed request. It prints its figures and exits
non-zero on any breach.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.stream import Credentials, Process, free_port, gateway_process, provision, sigv4_headers, wait_http
from tests.support.gateway_config import write_gateway_config

BUCKET = "load"
KIB = 1024
MIB = 1024 * 1024
# (name, weight, method, prefix, size): allowed prefixes are granted, "denied/" is not.
MIX = (
    ("get-small", 55, "GET", "allowed", 4 * KIB),
    ("get-large", 5, "GET", "allowed", 4 * MIB),
    ("put-small", 15, "PUT", "allowed", 16 * KIB),
    ("head", 5, "HEAD", "allowed", 1 * KIB),
    ("denied-get", 15, "GET", "denied", 4 * KIB),
    ("denied-put", 5, "PUT", "denied", 16 * KIB),
)


def pattern(size: int) -> bytes:
    block = hashlib.sha256(b"grantgate-load").digest() * 32
    return (block * (size // len(block) + 1))[:size]


# ---------------------------------------------------------------- the origin (its own process)


def run_origin(port: int) -> None:
    """An S3 stand-in that keeps nothing: GET/HEAD /<bucket>/<prefix>/<size>/<name> answer `size` bytes."""
    from aiohttp import web

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    bodies: dict[int, bytes] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/_ready":
            return web.Response(text="ok")
        if request.method == "PUT":
            received = 0
            async for data in request.content.iter_any():
                received += len(data)
            return web.Response(headers={"ETag": f'"{received:032x}"'})
        parts = request.path.split("/")
        size = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
        body = bodies.setdefault(size, pattern(size))
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(size), "ETag": '"0"'})
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


# ---------------------------------------------------------------- the world


def gateway_config(workdir: Path, origin_port: int, s3_port: int, control_port: int) -> Path:
    return write_gateway_config(
        workdir / "gateway.toml",
        s3_port=s3_port,
        control_port=control_port,
        upstream_url=f"http://127.0.0.1:{origin_port}",
        upstream_key="load-upstream",
        upstream_secret="load-upstream-secret",
        store_url=f"sqlite:///{workdir / 'grantgate.db'}",
    )


def proc_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


# ---------------------------------------------------------------- the load


@dataclass
class Tally:
    completed: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    bytes_moved: int = 0


async def drive(port: int, creds: Credentials, connections: int, seconds: float, seed: int) -> Tally:
    import aiohttp
    from yarl import URL

    from proxy.s3 import sigv4

    tally = Tally()
    rng = random.Random(seed)
    weights = [m[1] for m in MIX]
    bodies = {size: pattern(size) for *_, size in MIX}
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + seconds

    async def one(session: aiohttp.ClientSession, worker: int, n: int) -> None:
        kind, _w, method, prefix, size = rng.choices(MIX, weights)[0]
        path = f"/{BUCKET}/{prefix}/{size}/w{worker}-{n}"
        body = bodies[size] if method == "PUT" else b""
        payload_hash = sigv4.UNSIGNED_PAYLOAD if method == "PUT" else hashlib.sha256(b"").hexdigest()
        headers = {"host": host}
        if method == "PUT":
            headers["content-length"] = str(len(body))
        headers.update(sigv4_headers(creds, method, path, (), headers, payload_hash))
        started = time.perf_counter()
        try:
            async with session.request(
                method, URL(f"http://{host}{path}", encoded=True), headers=headers, data=body or None
            ) as resp:
                data = await resp.read()
                request_id = resp.headers.get("x-grantgate-request-id", "")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.errors[f"{kind}: {type(exc).__name__}"] += 1
            return
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        tally.completed += 1
        tally.by_kind[kind] += 1
        tally.request_ids.append(request_id)
        tally.bytes_moved += len(data) + len(body)
        if prefix == "denied":
            ok = status == 403 and b"<Code>AccessDenied</Code>" in data
        elif method == "GET":
            ok = status == 200 and data == bodies[size]
        else:
            ok = status == 200
        if not ok:
            tally.errors[f"{kind}: HTTP {status}"] += 1
        if not request_id:
            tally.errors[f"{kind}: no request id"] += 1

    async def worker(session: aiohttp.ClientSession, index: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            await one(session, index, n)
            n += 1

    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
    ) as session:
        await asyncio.gather(*(worker(session, i) for i in range(connections)))
    return tally


def audit_ids(log: Path) -> Counter[str]:
    ids: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "s3_request":
                ids[record["request_id"]] += 1
    return ids


# ---------------------------------------------------------------- the run


@dataclass
class Report:
    connections: int
    seconds: float
    tally: Tally
    fds: dict[str, int]
    rss_mib: dict[str, float]
    audit_events: int
    breaches: list[str]

    def lines(self) -> list[str]:
        t = self.tally
        lat = sorted(t.latencies_ms) or [0.0]
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        out = [
            f"connections      {self.connections}",
            f"duration         {self.seconds:.1f} s",
            f"completed        {t.completed} requests ({t.completed / self.seconds:.0f}/s), "
            f"{t.bytes_moved / MIB:.0f} MiB moved",
            "by kind          " + ", ".join(f"{k}={v}" for k, v in sorted(t.by_kind.items())),
            f"latency ms       p50={p(0.5):.1f} p90={p(0.9):.1f} p99={p(0.99):.1f} max={lat[-1]:.1f} "
            f"mean={statistics.fmean(lat):.1f}",
            f"errors           {sum(t.errors.values())} {dict(t.errors) if t.errors else ''}",
            f"gateway fds      baseline={self.fds['baseline']} peak={self.fds['peak']} "
            f"after={self.fds['after']}",
            f"gateway RSS MiB  baseline={self.rss_mib['baseline']:.1f} warm={self.rss_mib['warm']:.1f} "
            f"peak={self.rss_mib['peak']:.1f} end={self.rss_mib['end']:.1f}",
            f"audit events     {self.audit_events} for {t.completed} completed requests",
            "result           " + ("PASS" if not self.breaches else "FAIL: " + "; ".join(self.breaches)),
        ]
        return out


def run(connections: int, seconds: float, workdir: Path, seed: int = 1) -> Report:
    server_key = secrets.token_urlsafe(48)
    (workdir / "server.key").write_text(server_key)
    store_url = f"sqlite:///{workdir / 'grantgate.db'}"
    grant = {"principal": "load", "bucket": BUCKET, "prefix": "allowed/"}
    creds = asyncio.run(provision(store_url, server_key.encode(), **grant))
    origin_port, s3_port, control_port = free_port(), free_port(), free_port()
    origin = Process(
        "origin",
        [sys.executable, "-m", "bench.load", "origin", "--port", str(origin_port)],
        workdir / "origin.log",
    )
    config = gateway_config(workdir, origin_port, s3_port, control_port)
    gateway = gateway_process(config, workdir / "gateway.log")
    try:
        origin.start()
        wait_http(f"http://127.0.0.1:{origin_port}/_ready")
        gateway.start()
        wait_http(f"http://127.0.0.1:{control_port}/readyz")
        pid = gateway.pid
        asyncio.run(drive(s3_port, creds, 8, 0.5, seed))  # import and warm every path once
        time.sleep(0.5)
        fds_base, rss_base = proc_fds(pid), proc_rss_mib(pid)
        samples: list[tuple[float, int, float]] = []

        async def sampled() -> Tally:
            task = asyncio.ensure_future(drive(s3_port, creds, connections, seconds, seed))
            started = time.monotonic()
            while not task.done():
                samples.append((time.monotonic() - started, proc_fds(pid), proc_rss_mib(pid)))
                await asyncio.sleep(0.25)
            return await task

        tally = asyncio.run(sampled())
        fds_after = proc_fds(pid)
        # Closed client connections leave at once; idle pooled upstream connections after aiohttp's
        # 15 s keep-alive. Both must go, or something is holding sockets it should have let go.
        for _ in range(300):
            if fds_after <= fds_base + 4:
                break
            time.sleep(0.1)
            fds_after = proc_fds(pid)
        rss_end = proc_rss_mib(pid)
    finally:
        gateway.stop()
        origin.stop()
    # Once the gateway has exited, every event it emitted is in its log.
    warm = [rss for t, _, rss in samples if t >= seconds * 0.25] or [rss_end]
    audit = audit_ids(workdir / "gateway.log")
    ids = Counter(tally.request_ids)
    breaches = []
    if tally.errors:
        breaches.append(f"{sum(tally.errors.values())} unexpected errors")
    if tally.completed == 0:
        breaches.append("no request completed")
    if fds_after > fds_base + 4:
        breaches.append(f"fds did not return to baseline ({fds_base} -> {fds_after})")
    if rss_end - warm[0] > max(48.0, warm[0] * 0.25):
        breaches.append(f"memory grew under steady load ({warm[0]:.0f} -> {rss_end:.0f} MiB)")
    missing = [i for i in ids if audit[i] != 1]
    if missing or any(n > 1 for n in ids.values()):
        breaches.append(f"{len(missing)} completed requests without exactly one audit event")
    return Report(
        connections,
        seconds,
        tally,
        {"baseline": fds_base, "peak": max((f for _, f, _ in samples), default=fds_base), "after": fds_after},
        {
            "baseline": rss_base,
            "warm": warm[0],
            "peak": max((r for _, _, r in samples), default=rss_end),
            "end": rss_end,
        },
        sum(audit[i] for i in ids),
        breaches,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    origin = sub.add_parser("origin", help="(internal) run the in-memory origin")
    origin.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.command == "origin":
        run_origin(args.port)
        return
    with tempfile.TemporaryDirectory(prefix="grantgate-load-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(args.connections, args.seconds, workdir, args.seed)
    print("\n".join(report.lines()))
    sys.exit(1 if report.breaches else 0)


if __name__ == "__main__":
    main()
