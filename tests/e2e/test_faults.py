"""Broken networks on both sides of a real gateway: a misbehaving upstream, clients that vanish or crawl.

Whatever breaks, the client must see an error or a cut connection (never a short object that looks
whole), the gateway must let go of the upstream connection, and the audit event must say what happened.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from support.faulty import FaultyUpstream, faulty_upstream, pattern, refused_port
from support.gateways import extra_gateway, proc_fds, proc_rss_kib, sync_gateway
from support.rawclient import RawClient
from support.world import GatewayProcess, Identity, World

from proxy.s3.sigv4 import UNSIGNED_PAYLOAD

BUCKET = "faulty-bucket"
READ_TIMEOUT = 1.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes
    declared: int | None  # Content-Length the gateway announced
    ended: str  # "complete" | "eof" | "reset" | "timeout"

    @property
    def request_id(self) -> str:
        return self.headers.get("x-grantgate-request-id", "")


@dataclass
class Faults:
    upstream: FaultyUpstream
    gateway: GatewayProcess
    who: Identity

    def client(self) -> RawClient:
        return RawClient(self.gateway.s3_url, self.who.access_key_id, self.who.secret_access_key, timeout=10)

    def connect(self) -> socket.socket:
        host, port = self.gateway.s3_url.removeprefix("http://").split(":")
        return socket.create_connection((host, int(port)), timeout=10)

    def request_bytes(self, method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
        payload_hash = UNSIGNED_PAYLOAD if method == "PUT" else None
        signed = self.client().sign(method, path, headers=headers, **_hash(payload_hash))
        head = "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
        return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode()

    def fetch(self, path: str, *, stop_after: int | None = None, pause: float = 0.0) -> Fetched:
        """GET over a raw socket, recording exactly how many body bytes came and how the stream ended."""
        with contextlib.closing(self.connect()) as sock:
            sock.sendall(self.request_bytes("GET", path))
            return _read_response(sock, stop_after=stop_after, pause=pause)

    def event(self, request_id: str) -> dict[str, object]:
        return self.gateway.event_for(request_id)


def _hash(payload_hash: str | None) -> dict[str, str]:
    return {} if payload_hash is None else {"payload_hash": payload_hash}


def _read_response(sock: socket.socket, *, stop_after: int | None = None, pause: float = 0.0) -> Fetched:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before the response head: {buf!r}")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    declared = int(headers["content-length"]) if "content-length" in headers else None
    if pause:
        time.sleep(pause)
    ended = "complete"
    received = bytearray(body)
    while declared is None or len(received) < declared:
        if stop_after is not None and len(received) >= stop_after:
            ended = "stopped"
            break
        try:
            data = sock.recv(1024 * 1024)
        except ConnectionResetError:
            ended = "reset"
            break
        except TimeoutError:
            ended = "timeout"
            break
        if not data:
            ended = "eof" if declared is not None else "complete"
            break
        received += data
    return Fetched(int(status_line.split()[1]), headers, bytes(received), declared, ended)


@pytest.fixture(scope="module")
def faults(world: World) -> Iterator[Faults]:
    who = world.person(f"faults-{secrets.token_hex(4)}")
    world.grant(who, f"s3://{BUCKET}/", "read,write,list")
    with (
        faulty_upstream() as upstream,
        extra_gateway(
            world,
            "faults",
            upstream.url,
            upstream=f"read_timeout_seconds = {READ_TIMEOUT}\nconnect_timeout_seconds = 1",
        ) as gateway,
    ):
        sync_gateway(world, gateway)
        yield Faults(upstream, gateway, who)


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- the upstream breaks mid-download


@pytest.mark.parametrize("mode", ["reset", "short", "stall-body"])
def test_upstream_cut_mid_download_cuts_the_client_too(faults: Faults, mode: str) -> None:
    size = 4 * MIB
    got = faults.fetch(f"/{BUCKET}/{mode}/{size}/object.bin")
    assert got.status == 200
    assert got.declared == size
    # The object is visibly incomplete: fewer bytes than announced and a cut connection, never a clean end.
    assert len(got.body) < size
    assert got.ended in ("reset", "eof")
    assert got.body == pattern(size)[: len(got.body)]
    event = faults.event(got.request_id)
    assert event["outcome"] == "upstream_error"
    assert event["upstream_status"] == 200
    # What the audit says was sent is what left the gateway: at least what arrived, less than the object.
    assert len(got.body) <= int(event["bytes_out"]) < size  # type: ignore[call-overload]


def test_stalled_upstream_body_is_cut_after_the_read_timeout(faults: Faults) -> None:
    started = time.monotonic()
    got = faults.fetch(f"/{BUCKET}/stall-body/{MIB}/object.bin")
    elapsed = time.monotonic() - started
    assert got.ended in ("reset", "eof")
    assert READ_TIMEOUT * 0.9 < elapsed < READ_TIMEOUT + 5


# ---------------------------------------------------------------- the upstream fails before answering


@pytest.mark.parametrize("mode", ["close", "garbage", "stall-head"])
def test_upstream_failure_before_any_answer_is_service_unavailable(faults: Faults, mode: str) -> None:
    resp = faults.client().request("GET", f"/{BUCKET}/{mode}/1024/object.bin")
    assert resp.status == 503, resp.body
    assert resp.error_code == "ServiceUnavailable"
    event = faults.event(resp.request_id or "")
    assert event["outcome"] == "upstream_error"
    assert event["status"] == 503
    assert event["bytes_out"] == 0


@pytest.mark.parametrize(
    ("mode", "status", "code"), [("error500", 500, "InternalError"), ("error503", 503, "SlowDown")]
)
def test_upstream_5xx_reaches_the_client_unchanged_and_is_audited(
    faults: Faults, mode: str, status: int, code: str
) -> None:
    resp = faults.client().request("GET", f"/{BUCKET}/{mode}/0/object.bin")
    assert resp.status == status
    assert resp.error_code == code
    event = faults.event(resp.request_id or "")
    assert event["upstream_status"] == status
    assert event["outcome"] == "upstream_status"
    assert event["decision"] == "allow"


def test_refused_upstream_connection_is_service_unavailable(world: World, faults: Faults) -> None:
    with extra_gateway(
        world, "refused", f"http://127.0.0.1:{refused_port()}", upstream="connect_timeout_seconds = 1"
    ) as gateway:
        sync_gateway(world, gateway)
        who = faults.who
        resp = RawClient(gateway.s3_url, who.access_key_id, who.secret_access_key).request(
            "GET", f"/{BUCKET}/ok/10/object.bin"
        )
        assert resp.status == 503
        assert resp.error_code == "ServiceUnavailable"
        assert gateway.event_for(resp.request_id or "")["outcome"] == "upstream_error"


def test_upstream_reset_mid_upload_is_an_error_and_the_upload_never_completes(faults: Faults) -> None:
    key = f"reset/{secrets.token_hex(4)}"
    body = secrets.token_bytes(2 * MIB)
    resp = faults.client().request("PUT", f"/{BUCKET}/{key}", body=body, payload_hash=UNSIGNED_PAYLOAD)
    assert resp.status >= 500
    upload = faults.upstream.upload(key)
    assert upload is not None
    assert not upload.complete
    event = faults.event(resp.request_id or "")
    assert event["outcome"] == "upstream_error"


def test_waiting_for_a_busy_upstream_pool_is_not_a_connect_timeout(world: World, faults: Faults) -> None:
    # One pooled upstream connection, held by a slow download for longer than the connect timeout.
    with extra_gateway(
        world,
        "pool-of-one",
        faults.upstream.url,
        upstream="max_connections = 1\nconnect_timeout_seconds = 0.5",
    ) as gateway:
        sync_gateway(world, gateway)
        busy = Faults(faults.upstream, gateway, faults.who)
        size = 32 * MIB
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(busy.fetch, f"/{BUCKET}/ok/{size}/hold.bin", pause=2.0)
            time.sleep(0.5)  # the slow download now holds the only connection
            waited = busy.client().request("GET", f"/{BUCKET}/ok/100/queued.bin")
            assert slow.result().ended == "complete"
        assert waited.status == 200, waited.body
        assert waited.body == pattern(100)


# ---------------------------------------------------------------- the client vanishes or crawls


def test_client_gone_mid_download_releases_the_upstream_connection(faults: Faults) -> None:
    size = 64 * MIB
    before = faults.upstream.open_connections
    got = faults.fetch(f"/{BUCKET}/ok/{size}/big.bin", stop_after=MIB)
    assert got.ended == "stopped"
    event = faults.event(got.request_id)
    assert event["outcome"] == "client_disconnected"
    assert MIB <= int(event["bytes_out"]) < size  # type: ignore[call-overload]
    # An unfinished upstream body cannot go back to the pool: the connection must be closed.
    assert _wait_for(lambda: faults.upstream.open_connections <= before)


def test_client_gone_mid_upload_never_completes_upstream(faults: Faults) -> None:
    key = f"ok/{secrets.token_hex(4)}"
    declared = 8 * MIB
    request = faults.request_bytes("PUT", f"/{BUCKET}/{key}", {"content-length": str(declared)})
    with contextlib.closing(faults.connect()) as sock:
        sock.sendall(request + secrets.token_bytes(MIB))
        assert _wait_for(lambda: (u := faults.upstream.upload(key)) is not None and u.received > 0)
    upload = faults.upstream.upload(key)
    assert upload is not None
    # The gateway closes its upstream request rather than leave it hanging, and it never completes.
    assert _wait_for(lambda: upload.abandoned)
    assert not upload.complete
    assert upload.received <= MIB
    events = [e for e in faults.gateway.events() if e.get("key") == key]
    assert len(events) == 1
    assert events[0]["outcome"] in ("client_disconnected", "client_error")
    assert events[0]["bytes_in"] <= MIB


def test_slow_reader_is_back_pressured_not_buffered(faults: Faults) -> None:
    size = 96 * MIB
    pid = faults.gateway.proc.pid  # type: ignore[union-attr]
    before = proc_rss_kib(pid)
    with contextlib.closing(faults.connect()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(faults.request_bytes("GET", f"/{BUCKET}/ok/{size}/slow.bin"))
        time.sleep(1.5)  # the client reads nothing while the upstream could deliver everything
        during = proc_rss_kib(pid)
        got = _read_response(sock)
    assert got.ended == "complete"
    assert got.body == pattern(size)
    # Without back-pressure the gateway would hold the 96 MiB the client is not reading.
    assert during - before < 32 * 1024, (before, during)


def test_slowloris_connections_do_not_starve_other_clients(faults: Faults) -> None:
    sockets = []
    try:
        for _ in range(200):
            sock = faults.connect()
            sock.sendall(b"GET /" + BUCKET.encode() + b"/ok/10/x HTTP/1.1\r\nHost: loris\r\n")
            sockets.append(sock)
        for sock in sockets:  # a header byte each, never the blank line that ends the head
            sock.sendall(b"X")
        started = time.monotonic()
        resp = faults.client().request("GET", f"/{BUCKET}/ok/1000/fine.bin")
        assert resp.status == 200
        assert resp.body == pattern(1000)
        assert time.monotonic() - started < 2
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.slow
def test_slowloris_connection_is_closed_by_the_gateway(faults: Faults) -> None:
    from proxy.app import S3_IDLE_TIMEOUT_SECONDS

    with contextlib.closing(faults.connect()) as sock:
        sock.sendall(b"GET /" + BUCKET.encode() + b"/ok/10/x HTTP/1.1\r\n")
        sock.settimeout(S3_IDLE_TIMEOUT_SECONDS + 15)
        started = time.monotonic()
        closed = False
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while time.monotonic() - started < S3_IDLE_TIMEOUT_SECONDS + 10:
                sock.sendall(b"X")  # one header byte at a time, never finishing the head
                with contextlib.suppress(TimeoutError):
                    sock.settimeout(5)
                    if sock.recv(1024) == b"":
                        closed = True
                        break
        closed = closed or time.monotonic() - started < S3_IDLE_TIMEOUT_SECONDS + 10
    assert closed


# ---------------------------------------------------------------- thousands of broken requests


def _one_broken(faults: Faults, index: int) -> str:
    mode = ("reset", "short", "close", "garbage", "error500", "ok", "client-gone")[index % 7]
    if mode == "client-gone":
        got = faults.fetch(f"/{BUCKET}/ok/{4 * MIB}/gone-{index}", stop_after=64 * 1024)
        return got.ended
    if mode in ("reset", "short"):
        return faults.fetch(f"/{BUCKET}/{mode}/{256 * 1024}/cut-{index}").ended
    return str(faults.client().request("GET", f"/{BUCKET}/{mode}/2048/x-{index}").status)


def test_thousands_of_broken_requests_leak_no_fds_or_memory(faults: Faults) -> None:
    pid = faults.gateway.proc.pid  # type: ignore[union-attr]
    rss: list[int] = []
    outcomes: list[str] = []
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: _one_broken(faults, i), range(350)))  # warm up every code path
        time.sleep(0.5)
        fds_before = proc_fds(pid)
        events_before = len(faults.gateway.events())
        # Three equal rounds: the allocator keeps what it freed (its trim threshold is 64 MiB), so the
        # first round may raise RSS once; a leak keeps raising it round after round. A leaked body or
        # buffer (256 KiB to 4 MiB each) would add hundreds of MiB per round; the bound is 47 KB/request.
        # Measured here: 7-20 MiB per round, still unexplained (see docs/security.md, open findings).
        for start in (0, 700, 1400):
            outcomes += pool.map(lambda i: _one_broken(faults, i), range(start, start + 700))
            rss.append(proc_rss_kib(pid))
    # Every request ended one of the expected ways, none silently complete when it was cut.
    assert set(outcomes) <= {"reset", "eof", "stopped", "200", "503", "500"}, set(outcomes)
    assert _wait_for(lambda: len(faults.gateway.events()) - events_before == 2100, timeout=20)
    assert _wait_for(lambda: proc_fds(pid) <= fds_before + 8, timeout=10), (fds_before, proc_fds(pid))
    assert rss[2] - rss[1] < 32 * 1024, rss


def test_readiness_includes_the_bucket_and_serve_warns_when_it_is_unreachable(world: World) -> None:
    assert world.http.readyz() == (200, world.http.readyz()[1])
    assert world.http.readyz()[1]["bucket"] == "reachable"
    with extra_gateway(
        world,
        "no-bucket",
        f"http://127.0.0.1:{refused_port()}",
        upstream="connect_timeout_seconds = 1",
        sections=f'[policy.resources.models]\npaths = ["s3://{BUCKET}/models/"]\n',
    ) as gateway:
        status, body = gateway.readyz()
        assert (status, body["status"], body["bucket"]) == (503, "unavailable", "unreachable")
        assert body["store"] == "reachable"
        [warning] = [
            json.loads(line)
            for line in gateway.log_path.read_text().splitlines()
            if '"bucket_unusable"' in line
        ]
        assert warning["status"] == "unreachable" and warning["bucket"] == BUCKET
