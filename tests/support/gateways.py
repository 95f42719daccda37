"""Extra gateway processes on the test world's store, with their own upstream and settings.

Fault-injection and addressing tests need a gateway in front of something other than moto, or with
settings the world's two gateways do not have (a virtual-host base, short timeouts).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from support.gateway_config import write_gateway_config
from support.world import UPSTREAM_KEY, GatewayProcess, World, free_port


def proc_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


@contextlib.contextmanager
def extra_gateway(
    world: World,
    name: str,
    upstream_url: str,
    *,
    server: str = "",
    upstream: str = "",
    sections: str = "",
    refresh_interval: float = 0.1,
    workers: int = 1,
) -> Iterator[GatewayProcess]:
    """A gateway on the world's store in front of `upstream_url`; `server`/`upstream`: more TOML lines,
    `sections`: whole TOML sections appended (e.g. a `[policy]`). With several `workers`, /readyz speaks
    for worker 0 only: the block starts once every worker listens on the S3 port."""
    s3_port, control_port = free_port(), free_port()
    config = write_gateway_config(
        world.directory / f"{name}.toml",
        s3_port=s3_port,
        control_port=control_port,
        upstream_url=upstream_url,
        upstream_key=UPSTREAM_KEY,
        store_url=world.store_url,
        refresh_interval=refresh_interval,
        workers=workers,
        server=server,
        upstream=upstream,
        sections=sections,
    )
    gateway = GatewayProcess(
        config,
        f"http://127.0.0.1:{s3_port}",
        f"http://127.0.0.1:{control_port}",
        world.directory / f"{name}.log",
    )
    gateway.start()
    try:
        if workers > 1:
            _wait_for_workers(gateway, s3_port, workers)
        yield gateway
    finally:
        gateway.stop()


def sync_gateway(world: World, gateway: GatewayProcess, timeout: float = 10.0) -> None:
    """Wait until `gateway` has loaded what the world's own gateways have."""
    world.sync()
    want = world.http.state_version()
    deadline = time.monotonic() + timeout
    while gateway.state_version() < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gateway.config.name} did not pick up the store's changes")
        time.sleep(0.05)


def _wait_for_workers(gateway: GatewayProcess, s3_port: int, count: int, timeout: float = 15.0) -> None:
    assert gateway.proc is not None
    deadline = time.monotonic() + timeout
    while listening_sockets(s3_port) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gateway.config.name}: {count} workers did not start listening")
        time.sleep(0.05)


def listening_sockets(port: int) -> int:
    """LISTEN sockets on `port` (IPv4), from /proc/net/tcp: one per worker with SO_REUSEPORT."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "0A" and int(local.rpartition(":")[2], 16) == port:
            count += 1
    return count
