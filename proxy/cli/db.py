"""`grantgate db`: schema migrations of the store."""

from __future__ import annotations

import asyncio

import click

from proxy.cli.common import missing_sqlite_file, settings
from proxy.store.sql import database_revision, head_revision, upgrade_database


@click.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Migrate the database to the schema this version of GrantGate needs."""
    revision = asyncio.run(upgrade_database(settings(ctx).store_url()))
    click.echo(f"database is at revision {revision} (head)")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the database's schema revision and the one this version needs."""
    url = settings(ctx).store_url()
    missing = missing_sqlite_file(url)
    current = None if missing is not None else asyncio.run(database_revision(url))
    head = head_revision()
    if current == head:
        click.echo(f"{current} (head)")
    else:
        click.echo(f"{current or 'none (empty database)'}; head is {head}: run `grantgate db upgrade`")
