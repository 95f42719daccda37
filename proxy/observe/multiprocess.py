"""Metrics across worker processes: prometheus_client's multiprocess mode, owned by the supervisor.

With several workers each one counts the requests it serves in memory-mapped files in one directory the
parent creates before forking; worker 0's /metrics merges every file there, so a request counts whichever
worker served it, and a worker that died keeps counting (its counter files stay, only its live gauges go).
With one worker nothing here runs and the metrics stay in plain in-process values.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, multiprocess, values
from prometheus_client.registry import Collector

# prometheus_client's own switch: read when a metric's value class is chosen and by its collector.
DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _choose_value_class() -> None:
    # prometheus_client picks its value class once, at import, from the environment; the proxy's modules
    # import it long before the supervisor knows how many workers there are, so pick again.
    values.ValueClass = values.get_value_class()


@contextlib.contextmanager
def shared_metrics() -> Iterator[str]:
    """In the supervising parent, before forking: a fresh private directory for every worker's metric
    files, and multiprocess values for the metrics created after this (in the workers). On exit the
    environment and the value class are as before and the directory is gone."""
    directory = tempfile.mkdtemp(prefix="grantgate-metrics-")
    previous = os.environ.get(DIRECTORY_ENV)
    os.environ[DIRECTORY_ENV] = directory
    _choose_value_class()
    try:
        yield directory
    finally:
        close_all = getattr(values.ValueClass, "close_all_files", None)
        if close_all is not None:  # files this process mapped itself, if it created metrics
            close_all()
        if previous is None:
            os.environ.pop(DIRECTORY_ENV, None)
        else:
            os.environ[DIRECTORY_ENV] = previous
        _choose_value_class()
        shutil.rmtree(directory, ignore_errors=True)


def shared_directory() -> str | None:
    """The directory this process's metrics are written to and merged from, or None when they are its
    own (one worker)."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(DIRECTORY_ENV) or None


def worker_exited(pid: int) -> None:
    """Drop the live gauges of a worker that is gone (its counters stay: what it served still counts)."""
    directory = shared_directory()
    if directory is not None:
        multiprocess.mark_process_dead(pid, directory)


def merged_registry(directory: str, *extra: Collector) -> CollectorRegistry:
    """A registry for one scrape: every worker's files in `directory`, plus `extra` collectors of this
    process. Built per scrape, as the library requires, since the files' set of series keeps changing."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    for collector in extra:
        registry.register(collector)
    return registry
