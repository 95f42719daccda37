"""The per-request pure work of the data plane, timed as pure Python and as mypyc-compiled modules.

    python -m bench.pure [--rounds 9] [--iterations 20000] [--chunked-mib 64] [--compiled DIR]

The steps one request runs through the project's own pure modules, each timed alone: verify a
header-signed GET (parse the Authorization header, canonical request, signature), classify a GET, a PUT
and a ListObjectsV2, decide against an index holding many grants, sign the upstream request, build the
audit record and its canonical JSON body; and decode a signed aws-chunked body (1 MiB chunks).

Both builds cannot share one process (the modules have the same names), so each round starts one
process per build, the builds alternating within the round (A B, B A, ...) so that the machine's other
load hits both alike. Each process times every step over `--iterations` calls with its own CPU clock
(`time.process_time_ns`) and reports the CPU per call. The table gives the median over the rounds and
the min-max spread. Both builds are copies of this tree under build/ (whatever state it is in: `make
compile` builds in place): build/pure without extension modules, build/mypyc compiled; or `--compiled
DIR`, a directory holding a `proxy/` package with the extension modules next to their sources (`python
-m bench.pure build DIR` makes one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"
AKID = "GGBENCHKEY0000000001"
BUCKET = "models"
KEY = "llama/weights/model-00001-of-00030.safetensors"
HOST = "gateway.example:8443"
GRANTS = 100_000  # in the index; a tenth for the benchmark's principal, half of those on its bucket
MIB = 1024 * 1024


def _signed_head(method: str, path: str, query: list[tuple[str, str]], extra: dict[str, str]) -> Any:
    from proxy.s3 import sigv4
    from proxy.s3.request import RequestHead

    headers = {"host": HOST, **extra}
    added = sigv4.sign(
        method,
        path,
        query,
        headers,
        sigv4.UNSIGNED_PAYLOAD,
        access_key_id=AKID,
        secret=SECRET,
        session_token=None,
        region="us-east-1",
        now=NOW,
    )
    raw = path + ("?" + sigv4.canonical_query(query) if query else "")
    return RequestHead.build(method, raw, [*headers.items(), *added.items(), ("User-Agent", "bench")])


def _index() -> Any:
    from proxy.access.grants import Action, Grant
    from proxy.access.index import GrantIndex

    def grant(number: int) -> Grant:
        principal = "bench" if number % 10 == 0 else f"user-{number % 977}"
        bucket = BUCKET if number % 20 == 0 else f"bucket-{number % 13}"
        return Grant(
            id=f"g-{number:06d}",
            principal=principal,
            bucket=bucket,
            prefix=f"shard-{number:06d}/",
            actions=frozenset({Action.READ, Action.LIST}),
            created_at=NOW - timedelta(days=1),
            expires_at=NOW + timedelta(hours=8),
        )

    covering = Grant(
        id="g-covering",
        principal="bench",
        bucket=BUCKET,
        prefix="llama/",
        actions=frozenset({Action.READ, Action.LIST, Action.WRITE}),
        created_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(hours=8),
    )
    return GrantIndex.build([*(grant(n) for n in range(GRANTS)), covering])


def _event() -> Any:
    from proxy.observe.events import RequestEvent, Verdict

    return RequestEvent(
        request_id="0f4c1a2b3c4d5e6f",
        started_at=NOW.timestamp(),
        source_ip="10.1.2.3",
        user_agent="aws-cli/2.17 md/Botocore#1.35",
        method="GET",
        principal="bench",
        groups=("ml-team",),
        access_key_id=AKID,
        operation="GetObject",
        action="read",
        bucket=BUCKET,
        key=KEY,
        decision=Verdict.ALLOW,
        grant_ids=("g-covering",),
        status=200,
        bytes_out=4096,
        duration_ms=1.2,
        ttfb_ms=0.8,
        upstream_status=200,
        etag='"9b2cf535f27731c974343645a3985328"',
        object_size=4096,
        complete=True,
        range_start=0,
    )


def _chunked_body(size: int, chunk: int) -> tuple[Any, bytes]:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD body of `size` bytes and the spec that decodes it."""
    import hashlib

    from proxy.s3 import sigv4
    from proxy.s3.chunked import ChunkedSpec, chunk_signature

    scope_date, scope = NOW.strftime("%Y%m%d"), f"{NOW:%Y%m%d}/us-east-1/s3/aws4_request"
    amz_date = f"{NOW:%Y%m%dT%H%M%SZ}"
    key = sigv4.signing_key(SECRET, scope_date, "us-east-1")
    seed = "a" * 64
    payload = bytes(range(256)) * (chunk // 256)
    parts, previous = [], seed
    for _ in range(size // chunk):
        previous = chunk_signature(key, amz_date, scope, previous, hashlib.sha256(payload).hexdigest())
        parts += [f"{chunk:x};chunk-signature={previous}\r\n".encode(), payload, b"\r\n"]
    final = chunk_signature(key, amz_date, scope, previous, sigv4.EMPTY_SHA256)
    parts.append(f"0;chunk-signature={final}\r\n\r\n".encode())
    spec = ChunkedSpec(sigv4.STREAMING_SIGNED, size, (), key, seed, amz_date, scope)
    return spec, b"".join(parts)


def steps(chunked_mib: int) -> dict[str, tuple[Callable[[], object], int]]:
    """Each step as a call and how many calls one iteration stands for (the chunk decoder: one)."""
    from proxy.access.grants import Action, Target
    from proxy.audit.records import request_record
    from proxy.audit.resources import ResourceCatalog
    from proxy.s3 import sigv4
    from proxy.s3.chunked import ChunkedDecoder
    from proxy.s3.operations import classify

    get = _signed_head("GET", f"/{BUCKET}/{KEY}", [], {})
    put = _signed_head("PUT", f"/{BUCKET}/{KEY}", [], {"content-length": "4096"})
    listing = _signed_head(
        "GET", f"/{BUCKET}", [("list-type", "2"), ("prefix", "llama/"), ("delimiter", "/")], {}
    )

    def verify() -> object:
        signed = sigv4.parse_auth(get)
        return sigv4.verify(get, signed, SECRET, NOW, host=HOST)

    index = _index()
    read = [Target(Action.READ, BUCKET, KEY)]
    index.decide("bench", read, NOW)  # lays the grants out, as a principal's first request does

    def sign_upstream() -> object:
        return sigv4.sign(
            "GET",
            f"/{KEY}",
            (),
            {"host": f"{BUCKET}.s3.us-east-1.amazonaws.com"},
            sigv4.UNSIGNED_PAYLOAD,
            access_key_id="AKIAUPSTREAM",
            secret=SECRET,
            session_token=None,
            region="us-east-1",
            now=NOW,
        )

    catalog = ResourceCatalog.from_patterns({"llama": [f"s3://{BUCKET}/llama/"], "other": ["s3://x/y/"]})
    event = _event()
    spec, body = _chunked_body(chunked_mib * MIB, MIB)
    pieces = [body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024)]

    def decode() -> object:
        decoder = ChunkedDecoder(spec)
        total = 0
        for piece in pieces:
            total += sum(map(len, decoder.feed(piece)))
        total += sum(map(len, decoder.finish()))
        assert total == spec.decoded_length
        return total

    return {
        "verify SigV4 (header-signed GET)": (verify, 1),
        "classify GET object": (lambda: classify(get, host=HOST), 1),
        "classify PUT object": (lambda: classify(put, host=HOST), 1),
        "classify ListObjectsV2": (lambda: classify(listing, host=HOST), 1),
        f"decide ({GRANTS} grants in the index)": (lambda: index.decide("bench", read, NOW), 1),
        "sign the upstream GET": (sign_upstream, 1),
        "audit record + canonical body": (lambda: request_record(event, catalog).body(), 1),
        f"decode aws-chunked {chunked_mib} MiB (per MiB)": (decode, chunked_mib),
    }


PER_REQUEST = (
    "verify SigV4 (header-signed GET)",
    "classify GET object",
    f"decide ({GRANTS} grants in the index)",
    "sign the upstream GET",
    "audit record + canonical body",
)


def worker(iterations: int, chunked_mib: int) -> dict[str, Any]:
    """One round of every step in this process: CPU microseconds per call."""
    from proxy.build import compiled_modules

    timings: dict[str, float] = {}
    for name, (call, per) in steps(chunked_mib).items():
        count = max(3, iterations // 2000) if per > 1 else iterations
        for _ in range(min(count, 50)):  # warm caches and the allocator first
            call()
        started = time.process_time_ns()
        for _ in range(count):
            call()
        timings[name] = (time.process_time_ns() - started) / 1000 / count / per
    return {"timings": timings, "compiled": compiled_modules()}


def copy(target: Path) -> Path:
    """This tree's `proxy` package and build files at `target`, without any extension module: the pure
    build whatever state this tree is in (`make compile` builds in place)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target / "proxy", ignore_errors=True)
    shutil.copytree(ROOT / "proxy", target / "proxy", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    return target


def build(target: Path) -> Path:
    """A copy of this tree with the mypyc extension modules built next to the sources."""
    copy(target)
    subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=target,
        env={**os.environ, "GRANTGATE_MYPYC": "1"},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return target


def _run_worker(pythonpath: Path, iterations: int, chunked_mib: int) -> dict[str, Any]:
    # PYTHONPATH decides which `proxy` is imported: the compiled copy comes before this tree.
    command = [sys.executable, "-m", "bench.pure", "worker", f"--iterations={iterations}"]
    out = subprocess.run(
        [*command, f"--chunked-mib={chunked_mib}"],
        env={**os.environ, "PYTHONPATH": f"{pythonpath}{os.pathsep}{ROOT}"},
        cwd=pythonpath,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):9.2f} ({min(values):.2f}-{max(values):.2f})"


def compare(compiled: Path, rounds: int, iterations: int, chunked_mib: int) -> str:
    builds = {"pure": copy(ROOT / "build" / "pure"), "compiled": compiled}
    samples: dict[str, dict[str, list[float]]] = {b: {} for b in builds}
    for number in range(rounds):
        order = list(builds) if number % 2 == 0 else list(reversed(builds))
        for name in order:
            result = _run_worker(builds[name], iterations, chunked_mib)
            if (name == "compiled") != bool(result["compiled"]):
                raise SystemExit(f"the {name} build imported compiled modules {result['compiled']}")
            for step, value in result["timings"].items():
                samples[name].setdefault(step, []).append(value)
            samples[name].setdefault("per request (the five above)", []).append(
                sum(result["timings"][s] for s in PER_REQUEST)
            )
        print(f"round {number + 1}/{rounds} done", file=sys.stderr)
    lines = [
        f"CPU µs per call, median (min-max) of {rounds} rounds; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        "",
        "| step | pure | compiled | compiled / pure |",
        "|---|---|---|---|",
    ]
    for step, values in samples["pure"].items():
        other = samples["compiled"][step]
        ratio = statistics.median(other) / statistics.median(values)
        lines.append(f"| {step} | {_fmt(values)} | {_fmt(other)} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pure", description=__doc__)
    parser.add_argument("command", nargs="?", default="compare", choices=["compare", "worker", "build"])
    parser.add_argument("directory", nargs="?", help="build: where to build the compiled copy")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--chunked-mib", type=int, default=64)
    parser.add_argument("--compiled", type=Path, help="a tree with the compiled build (default: build one)")
    args = parser.parse_args(argv)
    if args.command == "worker":
        print(json.dumps(worker(args.iterations, args.chunked_mib)))
        return
    if args.command == "build":
        print(build(Path(args.directory or ROOT / "build" / "mypyc")))
        return
    compiled = args.compiled or build(ROOT / "build" / "mypyc")
    print(compare(compiled, args.rounds, args.iterations, args.chunked_mib))


if __name__ == "__main__":
    main()
