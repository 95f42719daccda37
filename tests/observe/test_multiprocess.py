"""Metrics shared across worker processes: real forked processes writing to one real directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from proxy.audit.resources import ResourceCatalog
from proxy.observe.events import RequestEvent
from proxy.observe.metrics import GatewayMetrics
from proxy.observe.multiprocess import DIRECTORY_ENV, shared_directory, shared_metrics, worker_exited

GET = RequestEvent(
    "R", 0.0, "127.0.0.1", "t", "GET", operation="GetObject", action="read", decision="allow", status=200
)


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition.decode())
        for s in family.samples
    }


def requests_total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _labels), v in found.items() if name == "grantgate_s3_requests_total")


def in_child(work: Callable[[], None]) -> int:
    """Run `work` in a forked process, as a worker would, and return its pid once it has exited."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def test_the_directory_and_the_environment_live_as_long_as_the_block() -> None:
    before = os.environ.get(DIRECTORY_ENV)
    assert shared_directory() is None
    with shared_metrics() as directory:
        assert Path(directory).is_dir() and Path(directory).name.startswith("grantgate-metrics-")
        assert os.environ[DIRECTORY_ENV] == directory
        assert shared_directory() == directory
    assert not Path(directory).exists()
    assert os.environ.get(DIRECTORY_ENV) == before
    assert shared_directory() is None
    assert values.ValueClass is values.MutexValue  # metrics made afterwards are in-process again


def test_every_process_counts_and_a_dead_workers_gauges_go_but_its_counts_stay() -> None:
    catalog = ResourceCatalog()

    def worker(requests: int, queued: int) -> Callable[[], None]:
        def work() -> None:
            metrics = GatewayMetrics(catalog)
            for _ in range(requests):
                metrics(GET)
            metrics.audit_queue.set(queued)

        return work

    with shared_metrics():
        first = in_child(worker(3, 5))
        in_child(worker(4, 7))
        worker_exited(first)
        metrics = GatewayMetrics(catalog, live=lambda: {"grants": 9})  # this process: worker 0
        metrics(GET)
        metrics.audit_queue.set(2)
        found = samples(metrics.exposition())

    assert requests_total(found) == 3 + 4 + 1
    allowed = (("action", "read"), ("decision", "allow"), ("operation", "GetObject"), ("status_class", "2xx"))
    assert found[("grantgate_s3_requests_total", allowed)] == 8  # one series, merged: no pid label
    # livesum over the workers still alive: the second's 7 (not marked dead here) and this one's 2
    assert found[("grantgate_audit_queue_depth", ())] == 7 + 2
    assert found[("grantgate_grants_active", ())] == 9  # worker 0's live view comes along
    assert not any(name.endswith("_created") for name, _ in found)


def test_one_process_alone_exposes_its_own_registry() -> None:
    metrics = GatewayMetrics(ResourceCatalog())
    metrics(GET)
    assert requests_total(samples(metrics.exposition())) == 1
