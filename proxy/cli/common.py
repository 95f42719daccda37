"""Plumbing every `grantgate` command module shares: the loaded settings, a store for one command, the
actor name recorded for changes made from a shell, the one-line user error, and the output helpers."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from proxy.config import Settings, load_settings
from proxy.store.engine import StoreError, async_url
from proxy.store.sql import SqlStore

T = TypeVar("T")

# Options several commands take, spelled once so their flags and help read the same everywhere.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
group_option = click.option(
    "--group", "groups", multiple=True, help="Group of the principal (repeatable); replaces its groups."
)


class UserError(click.ClickException):
    """A mistake in the command, the config or the data it names: shown as one line, exit code 2."""

    exit_code = 2


def settings(ctx: click.Context) -> Settings:
    """The settings of the config file given to the root command, loaded once per invocation."""
    root = ctx.find_root()
    cached: Settings | None = root.meta.get("grantgate.settings")
    if cached is None:
        cached = load_settings(root.obj)
        root.meta["grantgate.settings"] = cached
    return cached


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite store URL that does not exist yet (opening it would create it), else None."""
    if async_url(url).get_backend_name() != "sqlite":
        return None
    database = async_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return None if path.exists() else path


def with_store(settings: Settings, action: Callable[[SqlStore], Awaitable[T]]) -> T:
    """Open the store, run `action`, close. An existing SQLite file is migrated on the spot; none is
    created here (a typo'd --config or a forgotten one would leave an empty database behind): only
    `db upgrade` and `serve` create one. PostgreSQL is shared by several gateways, so its schema
    changes only with `db upgrade`."""
    url = settings.store_url()
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise StoreError(f"no database at {missing}: create it with `grantgate --config FILE db upgrade`")
    embedded = async_url(url).get_backend_name() == "sqlite"

    async def run() -> T:
        store = await SqlStore.open(url, upgrade=embedded)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def actor() -> str:
    """Who made a change from the CLI: `cli:` and the login name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        user = "unknown"
    return f"cli:{user}"


def now() -> datetime:
    return datetime.now(UTC)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, as wide as their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
