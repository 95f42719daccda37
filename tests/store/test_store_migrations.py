"""Alembic migrations shipped inside the package, and how store URLs are understood."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from proxy.store.engine import StoreError, async_url, create_engine_for
from proxy.store.schema import metadata
from proxy.store.sql import (
    SqlStore,
    _alembic_config,
    database_revision,
    head_revision,
    upgrade_database,
)


def _schema_differences(conn: Connection) -> list[object]:
    return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


async def test_migrated_schema_matches_the_tables_the_code_uses(store_url: str) -> None:
    await upgrade_database(store_url)
    engine = create_engine_for(store_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_schema_differences) == []
    finally:
        await engine.dispose()


async def test_helpers_report_no_revision_then_head(store_url: str) -> None:
    assert await database_revision(store_url) is None
    assert await upgrade_database(store_url) == head_revision()
    assert await database_revision(store_url) == head_revision()


async def test_migrations_run_from_any_working_directory(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert await upgrade_database(store_url) == head_revision()
    assert list(elsewhere.iterdir()) == []


async def test_downgrade_to_base_and_upgrade_again(store_url: str) -> None:
    await upgrade_database(store_url)

    def downgrade(conn: Connection) -> None:
        config = _alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "base")

    engine = create_engine_for(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
    finally:
        await engine.dispose()
    assert await database_revision(store_url) is None
    assert await upgrade_database(store_url) == head_revision()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///grantgate.db", "sqlite+aiosqlite:///grantgate.db"),
        ("sqlite:////var/lib/gg.db", "sqlite+aiosqlite:////var/lib/gg.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://gg@db.internal/grantgate", "postgresql+asyncpg://gg@db.internal/grantgate"),
        ("postgres://gg@db/grantgate", "postgresql+asyncpg://gg@db/grantgate"),
        ("postgresql+asyncpg://gg@db:5433/grantgate", "postgresql+asyncpg://gg@db:5433/grantgate"),
        ("postgresql://gg@db/grantgate?sslmode=require", "postgresql+asyncpg://gg@db/grantgate?ssl=require"),
    ],
)
def test_store_urls_map_to_async_drivers(url: str, expected: str) -> None:
    assert async_url(url).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported store URL scheme"),
        ("postgresql+psycopg2://u@h/db", "unsupported database driver"),
        ("not a url", "invalid store URL"),
    ],
)
def test_unsupported_store_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        async_url(url)


async def test_unreachable_postgres_is_a_store_error_that_hides_the_password() -> None:
    with pytest.raises(StoreError, match="cannot open database") as exc:
        await SqlStore.open("postgresql://gg:hunter2hunter2@127.0.0.1:1/grantgate")
    assert "hunter2" not in str(exc.value)
