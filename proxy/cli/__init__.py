"""`grantgate`: run the gateway, and manage access keys, sessions, grants and requests from a shell.

The root command; each command group lives in its own module here, thin over the store, identity and
API client modules. Every user mistake ends in one readable line and exit code 2.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import click

from proxy import build
from proxy.cli import access
from proxy.cli.audit import audit
from proxy.cli.common import UserError
from proxy.cli.db import db
from proxy.cli.decoys import decoys
from proxy.cli.grants import grants
from proxy.cli.init import init
from proxy.cli.keys import keys
from proxy.cli.reviews import reviews
from proxy.cli.serve import demo, serve
from proxy.cli.tokens import tokens
from proxy.config import ConfigError
from proxy.sidecar.command import sidecar
from proxy.store.engine import StoreError

__all__ = ["UserError", "main"]


def _show_version(ctx: click.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"grantgate {metadata.version('grantgate')} ({build.describe()})")
        ctx.exit()


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, StoreError, ValueError) as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:  # a file or port the command needs: still one line, never a traceback
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="GRANTGATE_CONFIG",
    help="Configuration file (TOML). Default: built-in defaults. Env: GRANTGATE_CONFIG.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _show_version(ctx, value),
    help="Show the version and which build runs (pure Python or compiled by mypyc), then exit.",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """GrantGate: an S3 gateway that admits only granted, time-bound, audited access."""
    ctx.obj = config_path


for _command in (
    serve,
    demo,
    db,
    keys,
    grants,
    tokens,
    init,
    audit,
    decoys,
    reviews,
    sidecar,
    access.login,
    access.whoami,
    access.request_access,
    access.requests_,
    access.approve,
    access.deny,
    access.cancel,
    access.review,
    access.revoke,
    access.extend,
    access.mine,
):
    main.add_command(_command)
