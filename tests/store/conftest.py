"""Store fixtures: every store test runs against each backend in STORE_BACKENDS.

SQLite always runs. PostgreSQL runs when a server binary is installed (a throw-away cluster is started
once per session, one database per test, see tests/support/postgres.py); otherwise its cases are
skipped, or fail under CI (GRANTGATE_REQUIRE_POSTGRES).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.clock import Clock
from support.postgres import PostgresCluster, throwaway_cluster

from proxy.store.sql import SqlStore

STORE_BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'grantgate.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(store_url, upgrade=True)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[Any]:
    return []
