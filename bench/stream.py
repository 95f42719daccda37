"""Streaming benchmark: one large object GET and PUT, directly from an origin and through the gateway.

`python -m bench.stream` starts a small aiohttp origin (GET served from disk with sendfile, PUT drained
and dropped), a real gateway process in front of it (grant, SigV4 verification, re-signing and audit
logging on), and prints a markdown table of throughput, gateway CPU per GiB and gateway peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from base64 import b64encode
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from tests.support.gateway_config import write_gateway_config

BUCKET = "bench"
KEY = "objects/blob.bin"
PATH = f"/{BUCKET}/{KEY}"
CHUNK = 1024 * 1024  # aws-chunked chunk size the client frames with (botocore uses 1 MiB as well)
MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the origin (runs in its own process)


def run_origin(port: int, root: Path) -> None:
    """A bucket stand-in that costs next to nothing: GET is sendfile from disk, PUT is counted and dropped.

    It ignores the upstream signature: what is measured is the gateway, not a storage engine.
    """
    from aiohttp import web

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def get(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["key"]).resolve()
        if root not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, chunk_size=CHUNK)

    async def put(request: web.Request) -> web.Response:
        received = 0
        async for data in request.content.iter_any():
            received += len(data)
        return web.Response(headers={"ETag": '"bench"', "x-bench-received": str(received)})

    async def post(request: web.Request) -> web.Response:
        # Multipart: ?uploads starts an upload, ?uploadId=... completes it. Parts are plain PUTs above.
        await request.read()
        bucket, key = request.match_info["bucket"], request.match_info["key"]
        if "uploads" in request.query:
            body = (
                f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                "<UploadId>bench-upload</UploadId></InitiateMultipartUploadResult>"
            )
        else:
            body = '<CompleteMultipartUploadResult><ETag>"bench-2"</ETag></CompleteMultipartUploadResult>'
        return web.Response(text=body, content_type="application/xml")

    async def ready(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def list_buckets(_request: web.Request) -> web.Response:
        # The gateway's bucket probe (its /readyz) lists the buckets: an empty list is an answer.
        return web.Response(text=LIST_BUCKETS, content_type="application/xml")

    # 1 MiB reads, not aiohttp's 64 KiB: the sink must not be what limits an upload.
    app = web.Application(handler_args={"read_bufsize": CHUNK})
    app.router.add_get("/_ready", ready)
    app.router.add_get("/", list_buckets)
    app.router.add_get("/{bucket}/{key:.+}", get)
    app.router.add_put("/{bucket}/{key:.+}", put)
    app.router.add_post("/{bucket}/{key:.+}", post)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=True)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


LIST_BUCKETS = "<ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>"


@dataclass
class Process:
    """A child process we started, with the /proc figures the table reports."""

    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of this process's environment

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, **self.env},
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def reset_peak_rss(self) -> bool:
        """Restart the VmHWM high-water mark (Linux `clear_refs` 5); False where not permitted."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


# ---------------------------------------------------------------- the world: store, grant, config


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret: str


async def provision(
    store_url: str,
    server_key: bytes,
    *,
    principal: str = "bench",
    bucket: str = BUCKET,
    prefix: str = KEY.rpartition("/")[0] + "/",
) -> Credentials:
    """A principal with a key and a read/write grant on `prefix`, written as the CLI would."""
    from proxy.access.grants import parse_actions
    from proxy.store.sql import SqlStore

    store = await SqlStore.open(store_url, upgrade=True)
    try:
        now = datetime.now(UTC)
        await store.ensure_principal(principal, [principal])
        key, secret = await store.create_access_key(principal, server_key, now=now)
        await store.add_grant(
            principal,
            bucket,
            prefix,
            parse_actions("read,write"),
            now=now,
            expires_at=None,
            created_by=principal,
        )
    finally:
        await store.close()
    return Credentials(key.access_key_id, secret)


def sigv4_headers(
    creds: Credentials,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: dict[str, str],
    payload_hash: str,
) -> dict[str, str]:
    """The SigV4 headers (Authorization, X-Amz-*) for one request signed now by `creds` in us-east-1."""
    from proxy.s3 import sigv4

    return sigv4.sign(
        method,
        path,
        query,
        headers,
        payload_hash,
        access_key_id=creds.access_key_id,
        secret=creds.secret,
        session_token=None,
        region="us-east-1",
        now=datetime.now(UTC),
    )


def gateway_config(workdir: Path, origin_url: str, s3_port: int, control_port: int) -> Path:
    return write_gateway_config(
        workdir / "gateway.toml",
        s3_port=s3_port,
        control_port=control_port,
        upstream_url=origin_url,
        upstream_key="bench-upstream",
        upstream_secret="bench-upstream-secret",
        store_url=f"sqlite:///{workdir / 'grantgate.db'}",
    )


# ---------------------------------------------------------------- the client


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    creds: Credentials | None  # None: the origin, which checks no signature

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def signed_headers(self, method: str, payload_hash: str, extra: dict[str, str]) -> dict[str, str]:
        headers = {"host": self.netloc, **extra}
        if self.creds is None:
            return headers
        headers.update(sigv4_headers(self.creds, method, PATH, (), headers, payload_hash))
        return headers

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=300)


@dataclass(frozen=True)
class Result:
    seconds: float
    status: int
    body_bytes: int  # GET: bytes received; PUT: bytes the origin says it received


def _send_request(
    conn: http.client.HTTPConnection, method: str, headers: dict[str, str], length: int
) -> None:
    conn.putrequest(method, PATH, skip_host=True, skip_accept_encoding=True)
    for name, value in {**headers, "content-length": str(length)}.items():
        conn.putheader(name, value)
    conn.endheaders()


def get_object(endpoint: Endpoint, _blob: Blob) -> Result:
    from proxy.s3.sigv4 import EMPTY_SHA256

    headers = endpoint.signed_headers("GET", EMPTY_SHA256, {})
    conn = endpoint.connect()
    buf = memoryview(bytearray(CHUNK))
    try:
        started = time.perf_counter()
        conn.putrequest("GET", PATH, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        received = 0
        while n := resp.readinto(buf):
            received += n
        return Result(time.perf_counter() - started, resp.status, received)
    finally:
        conn.close()


def put_plain(endpoint: Endpoint, blob: Blob) -> Result:
    """A PUT with Content-Length and UNSIGNED-PAYLOAD: the body is streamed through untouched."""
    from proxy.s3.sigv4 import UNSIGNED_PAYLOAD

    headers = endpoint.signed_headers("PUT", UNSIGNED_PAYLOAD, {})
    return _timed_upload(endpoint, blob, headers, blob.size, lambda sock, f: sock.sendfile(f))


def put_unsigned_trailer(endpoint: Endpoint, blob: Blob) -> Result:
    """What boto3 over HTTPS and pyarrow send: aws-chunked, unsigned chunks, a CRC32 trailer to verify."""
    from proxy.s3.sigv4 import STREAMING_UNSIGNED_TRAILER

    trailer = b"x-amz-checksum-crc32:%s\r\n" % blob.crc32_b64.encode()
    headers = endpoint.signed_headers(
        "PUT",
        STREAMING_UNSIGNED_TRAILER,
        {
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(blob.size),
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
    )
    headers_per_chunk = [b"%x\r\n" % n for n in blob.chunk_sizes]
    final = b"0\r\n" + trailer + b"\r\n"
    length = blob.size + sum(len(h) + 2 for h in headers_per_chunk) + len(final)
    return _timed_upload(endpoint, blob, headers, length, _framed(headers_per_chunk, blob.chunk_sizes, final))


def put_signed_chunks(endpoint: Endpoint, blob: Blob) -> Result:
    """The strictest mode: every 1 MiB chunk carries a chained signature the gateway must check."""
    from proxy.s3.chunked import chunk_signature
    from proxy.s3.sigv4 import EMPTY_SHA256, STREAMING_SIGNED, signing_key

    assert endpoint.creds is not None
    headers = endpoint.signed_headers(
        "PUT",
        STREAMING_SIGNED,
        {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(blob.size)},
    )
    amz_date = headers["x-amz-date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = signing_key(endpoint.creds.secret, amz_date[:8], "us-east-1", "s3")
    previous = headers["Authorization"].rpartition("Signature=")[2]
    # Chunk signatures depend on the request date, so they are chained here, before the clock starts.
    chunk_headers = []
    for size, digest in zip(blob.chunk_sizes, blob.chunk_sha256, strict=True):
        previous = chunk_signature(key, amz_date, scope, previous, digest)
        chunk_headers.append(b"%x;chunk-signature=%s\r\n" % (size, previous.encode()))
    final_signature = chunk_signature(key, amz_date, scope, previous, EMPTY_SHA256)
    final = b"0;chunk-signature=%s\r\n\r\n" % final_signature.encode()
    length = blob.size + sum(len(h) + 2 for h in chunk_headers) + len(final)
    return _timed_upload(endpoint, blob, headers, length, _framed(chunk_headers, blob.chunk_sizes, final))


_BodySender = Callable[[socket.socket, BinaryIO], object]


def _framed(chunk_headers: list[bytes], sizes: list[int], final: bytes) -> _BodySender:
    """Send the file as aws-chunked: each chunk's header, its data by sendfile, CRLF; then the end."""

    def send(sock: socket.socket, f: BinaryIO) -> None:
        offset = 0
        for header, size in zip(chunk_headers, sizes, strict=True):
            sock.sendall(header)
            sock.sendfile(f, offset, size)
            sock.sendall(b"\r\n")
            offset += size
        sock.sendall(final)

    return send


def _timed_upload(
    endpoint: Endpoint, blob: Blob, headers: dict[str, str], length: int, send_body: _BodySender
) -> Result:
    conn = endpoint.connect()
    try:
        with blob.path.open("rb") as f:
            started = time.perf_counter()
            _send_request(conn, "PUT", headers, length)
            assert conn.sock is not None
            send_body(conn.sock, f)
            resp = conn.getresponse()
            resp.read()
            seconds = time.perf_counter() - started
        return Result(seconds, resp.status, int(resp.getheader("x-bench-received") or -1))
    finally:
        conn.close()


# ---------------------------------------------------------------- the object


@dataclass
class Blob:
    """The benchmark object on disk, with the digests clients need computed once, outside any timing."""

    path: Path
    size: int
    chunk_sizes: list[int] = field(default_factory=list)
    chunk_sha256: list[str] = field(default_factory=list)
    crc32_b64: str = ""

    @classmethod
    def create(cls, path: Path, size: int) -> Blob:
        block = secrets.token_bytes(CHUNK)
        crc = 0
        blob = cls(path, size)
        with path.open("wb") as f:
            written = 0
            while written < size:
                # Vary each chunk a little so no layer can get away with caching a repeated block.
                piece = (written.to_bytes(8, "big") + block[8:])[: size - written]
                f.write(piece)
                crc = zlib.crc32(piece, crc)
                blob.chunk_sizes.append(len(piece))
                blob.chunk_sha256.append(hashlib.sha256(piece).hexdigest())
                written += len(piece)
        blob.crc32_b64 = b64encode(crc.to_bytes(4, "big")).decode()
        return blob


# ---------------------------------------------------------------- measuring


Transfer = Callable[[Endpoint, Blob], Result]


@dataclass(frozen=True)
class Case:
    label: str
    transfer: Transfer
    via_gateway: bool
    expect_bytes: Callable[[Blob], int]


CASES = {
    "get": [
        Case("GET, direct from origin", get_object, False, lambda b: b.size),
        Case("GET through gateway", get_object, True, lambda b: b.size),
    ],
    "put": [
        Case("PUT, direct to origin", put_plain, False, lambda b: b.size),
        Case("PUT through gateway (UNSIGNED-PAYLOAD)", put_plain, True, lambda b: b.size),
    ],
    "put-trailer": [
        Case("PUT through gateway (aws-chunked, CRC32 trailer)", put_unsigned_trailer, True, lambda b: -1),
    ],
    "put-signed": [
        Case("PUT through gateway (aws-chunked, signed chunks)", put_signed_chunks, True, lambda b: b.size),
    ],
}


@dataclass
class Row:
    case: Case
    seconds: list[float] = field(default_factory=list)
    gateway_cpu: list[float] = field(default_factory=list)
    gateway_peak_mib: float | None = None

    def mb_per_s(self, size: int) -> list[float]:
        return [size / s / 1e6 for s in self.seconds]


def measure(
    cases: list[Case], rounds: int, blob: Blob, origin: Endpoint, gateway: Endpoint, gw: Process
) -> list[Row]:
    rows = [Row(c) for c in cases]
    for round_no in range(rounds):
        # Alternate the order each round, so neither path always runs on a warmer page cache.
        order = rows if round_no % 2 == 0 else rows[::-1]
        for row in order:
            case = row.case
            if case.via_gateway:
                gw.reset_peak_rss()
            cpu_before = gw.cpu_seconds()
            result = case.transfer(gateway if case.via_gateway else origin, blob)
            cpu = gw.cpu_seconds() - cpu_before
            _check(case, result, blob)
            row.seconds.append(result.seconds)
            if case.via_gateway:
                row.gateway_cpu.append(cpu)
                peak = gw.peak_rss_mib()
                row.gateway_peak_mib = max(row.gateway_peak_mib or 0.0, peak)
            print(
                f"  round {round_no + 1}: {case.label}: {blob.size / result.seconds / 1e6:,.0f} MB/s",
                file=sys.stderr,
            )
    return rows


def _check(case: Case, result: Result, blob: Blob) -> None:
    if result.status != 200:
        raise RuntimeError(f"{case.label}: HTTP {result.status}")
    want = case.expect_bytes(blob)
    if case.transfer is get_object and result.body_bytes != want:
        raise RuntimeError(f"{case.label}: received {result.body_bytes} bytes, expected {want}")
    if case.transfer is not get_object and want >= 0 and result.body_bytes != want:
        raise RuntimeError(f"{case.label}: origin received {result.body_bytes} bytes, expected {want}")


def table(rows: list[Row], blob: Blob, rounds: int, baseline: float) -> str:
    gib = blob.size / 1024**3
    lines = [
        f"Object: {blob.size / MIB:,.0f} MiB; median of {rounds} rounds; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}; load average at the end {os.getloadavg()[0]:.1f}; "
        "origin: aiohttp sendfile (GET) / drain (PUT).",
        "",
        "| transfer | median MB/s | range MB/s | vs direct | gateway CPU s/GiB | gateway peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    direct = {
        r.case.transfer: statistics.median(r.mb_per_s(blob.size)) for r in rows if not r.case.via_gateway
    }
    for row in rows:
        speeds = row.mb_per_s(blob.size)
        median = statistics.median(speeds)
        base = direct.get(row.case.transfer) or direct.get(put_plain)
        ratio = f"{median / base:.0%}" if row.case.via_gateway and base else "—"
        cpu = f"{statistics.median(row.gateway_cpu) / gib:.2f}" if row.gateway_cpu else "—"
        peak = f"{row.gateway_peak_mib:.0f}" if row.gateway_peak_mib is not None else "—"
        lines.append(
            f"| {row.case.label} | {median:,.0f} | {min(speeds):,.0f} to {max(speeds):,.0f} | {ratio} | "
            f"{cpu} | {peak} |"
        )
    lines.append("")
    lines.append(f"Gateway RSS after start-up, before any transfer: {baseline:.0f} MiB.")
    return "\n".join(lines)


# ---------------------------------------------------------------- orchestration


def gateway_process(
    config: Path, log: Path, name: str = "gateway", env: dict[str, str] | None = None
) -> Process:
    """`grantgate serve` on `config`, logging (audit lines included) to `log`."""
    command = [sys.executable, "-m", "proxy", "--config", str(config), "serve"]
    return Process(name, command, log, env=env or {})


@contextlib.contextmanager
def running(processes: list[Process]) -> Iterator[None]:
    try:
        yield
    finally:
        for process in reversed(processes):
            process.stop()


def run(size_mib: int, rounds: int, modes: list[str], workdir: Path) -> str:
    print(f"writing a {size_mib} MiB object to {workdir}", file=sys.stderr)
    objects = workdir / "origin" / KEY.rpartition("/")[0]
    objects.mkdir(parents=True)
    blob = Blob.create(objects / KEY.rpartition("/")[2], size_mib * MIB)

    server_key = secrets.token_urlsafe(48)
    (workdir / "server.key").write_text(server_key)
    creds = asyncio.run(provision(f"sqlite:///{workdir / 'grantgate.db'}", server_key.encode()))

    origin_port, s3_port, control_port = free_port(), free_port(), free_port()
    origin = Process(
        "origin",
        [
            sys.executable,
            "-m",
            "bench.stream",
            "origin",
            "--port",
            str(origin_port),
            "--root",
            str(workdir / "origin"),
        ],
        workdir / "origin.log",
    )
    config = gateway_config(workdir, f"http://127.0.0.1:{origin_port}", s3_port, control_port)
    gateway = gateway_process(config, workdir / "gateway.log")
    with running([origin, gateway]):
        origin.start()
        wait_http(f"http://127.0.0.1:{origin_port}/_ready")
        gateway.start()
        wait_http(f"http://127.0.0.1:{control_port}/readyz")
        baseline = gateway.peak_rss_mib()
        cases = [case for mode in modes for case in CASES[mode]]
        rows = measure(
            cases,
            rounds,
            blob,
            Endpoint("127.0.0.1", origin_port, None),
            Endpoint("127.0.0.1", s3_port, creds),
            gateway,
        )
    # Counted once the gateway has exited: a request's audit line is written just after its response ends.
    audited = audited_requests(workdir / "gateway.log")
    expected = rounds * sum(1 for c in cases if c.via_gateway)
    if audited != expected:
        raise RuntimeError(f"expected {expected} audit events from the gateway, found {audited}")
    return table(rows, blob, rounds, baseline)


def audited_requests(log: Path) -> int:
    count = 0
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            if json.loads(line).get("event") == "s3_request":
                count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024, help="object size (default 1024 = 1 GiB)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per transfer (median reported)")
    parser.add_argument(
        "--modes",
        default="get,put,put-trailer,put-signed",
        help=f"comma-separated, from: {', '.join(CASES)}",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here instead of a temp dir")
    sub = parser.add_subparsers(dest="command")
    origin = sub.add_parser("origin", help="(internal) run the benchmark origin")
    origin.add_argument("--port", type=int, required=True)
    origin.add_argument("--root", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "origin":
        run_origin(args.port, args.root.resolve())
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in CASES]
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(unknown)}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=False)
        print(run(args.size_mib, args.rounds, modes, args.workdir))
        return
    workdir = Path(tempfile.mkdtemp(prefix="grantgate-bench-"))
    try:
        print(run(args.size_mib, args.rounds, modes, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
