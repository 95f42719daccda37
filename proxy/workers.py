"""Several gateway processes behind one S3 port (SO_REUSEPORT), each with its own event loop.

A parent forks the workers, forwards SIGTERM/SIGINT to them and restarts one that dies unexpectedly.
Grant state is not shared in memory: every worker refreshes its own LiveState from the store, the one
source of truth, so a revocation reaches all of them within the same refresh interval. Metrics are
shared through files (proxy/observe/multiprocess.py), so worker 0's /metrics counts every worker, and
request events are fed to worker 0's anomaly rules (proxy/observe/feed.py), so they judge every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import structlog
from aiohttp import web

from proxy.access.policy import Policy
from proxy.app import (
    install_event_loop,
    listen,
    observing_gateway,
    refuse_shared_s3_port,
    running_gateway,
    s3_server_runner,
    serve,
    settle_heap,
    tls_context,
    tune_malloc,
)
from proxy.config import ConfigError, Settings
from proxy.observe.logging import configure_logging
from proxy.observe.multiprocess import shared_metrics, worker_exited
from proxy.s3.listener import S3Listener
from proxy.store.engine import StoreError
from proxy.store.sql import upgrade_database
from proxy.written import WrittenVersion

log = structlog.get_logger("grantgate")

# A worker that keeps dying is a configuration or environment problem, not bad luck: give up.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
RESTART_DELAY_SECONDS = 0.5
# A worker's exit code for a mistake in the config or the store, the CLI's own code for user errors.
USER_ERROR = 2


CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def worker_count(settings: Settings) -> int:
    """`[server] workers`, with 0 meaning one per CPU this process may use."""
    return settings.server.workers or usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on, capped by its cgroup's CPU quota: in a container with a CPU
    limit of 2 on a 64-core node, 2, not the node's 64."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        limit = cpu_quota(Path(CGROUP_CPU_MAX).read_text())
    except OSError:  # no cgroup v2 here
        limit = None
    return max(1, min(count, limit)) if limit is not None else max(1, count)


def cpu_quota(cpu_max: str) -> int | None:
    """CPUs a cgroup v2 `cpu.max` ("<quota> <period>", or "max <period>") allows, rounded up."""
    quota, _, period = cpu_max.strip().partition(" ")
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return -(-int(quota) // int(period))


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker `index`'s settings: its own audit spool directory, since a spool is replayed in order
    by the one process that owns it. Worker 0 keeps the configured one."""
    if index == 0:
        return settings
    audit = settings.audit.model_copy(update={"spool_dir": f"{settings.audit.spool_dir}-worker{index}"})
    return settings.model_copy(update={"audit": audit})


async def serve_s3(
    settings: Settings,
    policy: Policy,
    stop: asyncio.Event,
    index: int,
    written: WrittenVersion | None = None,
) -> None:
    """A secondary worker: the S3 listener and its observers (audit, metrics; its events go on to worker
    0's anomaly rules). The control API, the notifiers and the workflow's sweeps run in worker 0 only,
    so timers fire once and the control port has one owner."""
    settings = worker_settings(settings, index)
    async with (
        running_gateway(settings, policy, written, migrate=False) as gateway,
        observing_gateway(gateway, worker=index),
    ):
        s3_listener = S3Listener(gateway)
        runner = s3_server_runner(s3_listener)
        await runner.setup()
        try:
            server = settings.server
            site = web.TCPSite(
                runner, server.s3_host, server.s3_port, ssl_context=tls_context(settings), reuse_port=True
            )
            await listen(site, "S3")
            settle_heap()
            log.info("worker_started", worker=index, pid=os.getpid(), s3=f"{server.s3_host}:{server.s3_port}")
            await stop.wait()
        finally:
            await runner.cleanup()
            await s3_listener.close()


def supervise(count: int, run_worker: Callable[[int], None]) -> int:
    """Fork `count` workers running `run_worker(index)` and wait for them; returns the exit code.

    Must be called before any event loop or thread exists in this process (fork copies only the caller).
    The workers' metrics share a directory that lives as long as this call.
    """
    with shared_metrics():
        return _supervise(count, run_worker)


def _supervise(count: int, run_worker: Callable[[int], None]) -> int:
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False
    restarts: deque[float] = deque(maxlen=MAX_RESTARTS)

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                run_worker(index)
            except (ConfigError, StoreError, ValueError, OSError) as exc:
                # What `grantgate serve` reports as a user mistake (an outdated schema, a bad
                # setting): one line and exit code 2, which the parent does not restart.
                print(f"Error: {exc}", file=sys.stderr, flush=True)
                code = USER_ERROR
            except Exception:
                log.exception("worker_failed", worker=index)
                code = 1
            finally:
                os._exit(code)  # never return into the parent's code, whatever was raised
        children[pid] = index

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(count):
        spawn(index)
    log.info("workers_started", workers=count, pids=sorted(children))
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        worker_exited(pid)
        if stopping:
            continue
        if exit_code == USER_ERROR:  # every worker would fail the same way: stop, and say so
            forward(signal.SIGTERM, None)
            code = USER_ERROR
            continue
        log.error("worker_exited", worker=index, pid=pid, exit_code=exit_code)
        now = time.monotonic()
        if len(restarts) == MAX_RESTARTS and now - restarts[0] < RESTART_WINDOW_SECONDS:
            log.error("workers_failing", restarts=MAX_RESTARTS, window_seconds=RESTART_WINDOW_SECONDS)
            forward(signal.SIGTERM, None)
            code = 1
            continue
        restarts.append(now)
        time.sleep(RESTART_DELAY_SECONDS)
        if not stopping:
            spawn(index)
    return code


def run_server(settings: Settings) -> None:
    configure_logging(settings.log.level, settings.log.format)
    tune_malloc()
    install_event_loop()

    # Made before the workers are forked, so they all share them.
    written = WrittenVersion()
    policy = settings.policy.build()

    async def main(index: int = 0) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await (
            serve(settings, policy, stop, written=written)
            if index == 0
            else serve_s3(settings, policy, stop, index, written)
        )

    # What every worker would fail on alike is checked once, before there are workers to repeat it.
    settings.server_key()
    tls_context(settings)
    refuse_shared_s3_port(settings.server.s3_host, settings.server.s3_port)
    count = worker_count(settings)
    if count > 1 and settings.store_url().startswith("sqlite"):
        # The embedded store is migrated here, once: workers migrating it at the same moment would find
        # the file locked by each other (secondary workers never migrate).
        asyncio.run(upgrade_database(settings.store_url()))
    if count == 1:
        asyncio.run(main())
    elif code := supervise(count, lambda index: asyncio.run(main(index))):
        raise SystemExit(code)
