"""The store's engines: URLs, SQLite's connection settings, and the helpers every store module writes with."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_SQLITE_BUSY_TIMEOUT_MS = 5000
# Execution option read by the SQLite "begin" hook: writers take the write lock up front (IMMEDIATE), so
# two writers queue on busy_timeout instead of failing when a read lock cannot be upgraded.
_SQLITE_BEGIN = "grantgate_sqlite_begin"


class StoreError(Exception):
    """A store problem with a message fit to show as is (unknown principal, schema not at head...)."""


def async_url(url: str) -> URL:
    """`sqlite:///x.db` -> sqlite+aiosqlite, `postgresql://...` -> postgresql+asyncpg; others refused."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError("invalid store URL: use sqlite:///path/to.db or postgresql://user@host/db") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        wanted = "aiosqlite"
    elif backend in ("postgresql", "postgres"):
        backend, wanted = "postgresql", "asyncpg"
        if "sslmode" in parsed.query:  # libpq's spelling; asyncpg calls it `ssl`
            query = dict(parsed.query)
            query["ssl"] = query.pop("sslmode")
            parsed = parsed.set(query=query)
    else:
        raise StoreError(
            f"unsupported store URL scheme {parsed.drivername!r}: use sqlite:///path/to.db or postgresql://..."
        )
    if driver and driver != wanted:
        raise StoreError(f"unsupported database driver {driver!r} for {backend}: GrantGate uses {wanted}")
    return parsed.set(drivername=f"{backend}+{wanted}")


def create_engine_for(url: str) -> AsyncEngine:
    sa_url = async_url(url)
    if sa_url.get_backend_name() != "sqlite":
        # pre_ping: a gateway outlives database restarts and fail-overs.
        return create_async_engine(sa_url, pool_pre_ping=True)
    database = sa_url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(sa_url)
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 driver, which skips it before SELECTs: a snapshot's reads must
        # share one transaction to be consistent.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, and far faster
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def write_engine(engine: AsyncEngine) -> AsyncEngine:
    """`engine` for writes: on SQLite each transaction takes the write lock when it begins."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
    return engine


def require_aware(*moments: datetime | None) -> None:
    # Checked up front: a naive datetime would otherwise fail deep inside SQLAlchemy's bind processing.
    for moment in moments:
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware, got {moment!r}")


def insert_ignoring_conflict(conn: AsyncConnection, table: Any, *keys: str) -> Any:
    """An INSERT into `table` that leaves a row already holding the same `keys` as it is."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=list(keys))
