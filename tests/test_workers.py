"""proxy/workers.py: how many workers, what each one's settings are, and what the supervisor sets up."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy import workers
from proxy.config import Settings
from proxy.observe.multiprocess import DIRECTORY_ENV
from proxy.workers import cpu_quota, supervise, usable_cpus, worker_count, worker_settings


def settings(**server: object) -> Settings:
    return Settings.model_validate({"server": server})


def test_zero_workers_means_one_per_usable_cpu() -> None:
    assert worker_count(settings(workers=0)) == usable_cpus() >= 1


def test_an_explicit_worker_count_is_kept() -> None:
    assert worker_count(settings(workers=3)) == 3


def test_one_worker_is_the_default() -> None:
    assert Settings().server.workers == 1
    assert worker_count(Settings()) == 1


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1), ("", None)],
)
def test_a_cgroup_cpu_limit_counts_as_whole_cpus_rounded_up(cpu_max: str, cpus: int | None) -> None:
    assert cpu_quota(cpu_max) == cpus


def test_zero_workers_means_the_cpus_the_container_may_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")  # a limit of one CPU, however many the machine has
    monkeypatch.setattr(workers, "CGROUP_CPU_MAX", str(cpu_max))
    assert worker_count(settings(workers=0)) == 1
    cpu_max.write_text("max 100000\n")
    assert worker_count(settings(workers=0)) == len(os.sched_getaffinity(0))


def test_each_extra_worker_gets_an_audit_spool_of_its_own() -> None:
    base = settings(workers=3)
    spools = {worker_settings(base, i).audit.spool_dir for i in range(3)}
    assert len(spools) == 3
    assert worker_settings(base, 0) is base  # worker 0 keeps the configured directory


def test_worker_settings_change_nothing_but_the_spool() -> None:
    base = settings(workers=2, s3_port=9100)
    other = worker_settings(base, 1)
    assert other.server == base.server
    assert other.upstream == base.upstream
    assert other.base_dir == base.base_dir
    assert other.audit.model_dump(exclude={"spool_dir"}) == base.audit.model_dump(exclude={"spool_dir"})


@pytest.fixture
def own_signal_handlers() -> Iterator[None]:
    """supervise() takes over SIGTERM/SIGINT to forward them; give them back to pytest afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_the_workers_share_a_private_metrics_directory_removed_once_they_are_gone(
    tmp_path: Path, own_signal_handlers: None
) -> None:
    before = os.environ.get(DIRECTORY_ENV)

    def run_worker(index: int) -> None:
        directory = os.environ.get(DIRECTORY_ENV, "")
        seen = {"directory": directory, "exists": Path(directory).is_dir() if directory else False}
        written = tmp_path / f"worker{index}.tmp"
        written.write_text(json.dumps(seen))
        written.rename(tmp_path / f"worker{index}.json")  # whole, or not there yet
        if index == 0:  # once both have looked, stop the pool the way an operator would
            while not (tmp_path / "worker1.json").exists():
                time.sleep(0.01)
            os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(30)  # a worker that returns by itself is restarted; this one waits for SIGTERM

    assert supervise(2, run_worker) == 0

    seen = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    directory = seen[0]["directory"]
    assert Path(directory).name.startswith("grantgate-metrics-")
    assert seen == [{"directory": directory, "exists": True}] * 2  # one directory, made before the fork
    assert not Path(directory).exists()
    assert os.environ.get(DIRECTORY_ENV) == before
