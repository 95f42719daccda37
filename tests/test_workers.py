"""proxy/workers.py's pure parts: how many workers, and what each one's settings are."""

from __future__ import annotations

import os

from proxy.config import Settings
from proxy.workers import worker_count, worker_settings


def settings(**server: object) -> Settings:
    return Settings.model_validate({"server": server})


def test_zero_workers_means_one_per_cpu() -> None:
    assert worker_count(settings(workers=0)) == (os.cpu_count() or 1)


def test_an_explicit_worker_count_is_kept() -> None:
    assert worker_count(settings(workers=3)) == 3


def test_one_worker_is_the_default_so_metrics_see_every_request() -> None:
    assert worker_count(Settings()) == 1


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
