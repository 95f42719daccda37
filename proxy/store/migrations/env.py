"""Alembic environment: GrantGate passes in an open connection; the alembic command line builds its own."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from proxy.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    from proxy.store.engine import create_engine_for  # only the alembic command line needs it

    engine = create_engine_for(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported")
    url = os.environ.get("GRANTGATE_STORE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set GRANTGATE_STORE_URL (or sqlalchemy.url) to the database to migrate")
    asyncio.run(_run_from_url(url))


main()
