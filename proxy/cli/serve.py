"""`grantgate serve` (the gateway from a config) and `grantgate demo` (a complete local demo)."""

from __future__ import annotations

from pathlib import Path

import click

from proxy.cli.common import settings
from proxy.config import ConfigError
from proxy.control.web_settings import dev_login_refusal


@click.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the S3 gateway and the control API."""
    # Imported when run: the server's stack (uvloop, aiohttp, workers) is not needed by other commands.
    from proxy.workers import run_server

    loaded = settings(ctx)
    refusal = dev_login_refusal(loaded.web, loaded.server.control_host)
    if refusal is not None:
        raise ConfigError(refusal)
    run_server(loaded)


@click.command()
@click.option("--s3-port", type=int, default=9000, show_default=True, help="Port of the S3 gateway.")
@click.option("--api-port", type=int, default=9001, show_default=True, help="Port of the control API.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Where the demo keeps its database and files.",
)
@click.option(
    "--credentials-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the demo's credentials to this file (JSON).",
)
def demo(s3_port: int, api_port: int, state_dir: Path, credentials_out: Path | None) -> None:
    """Run a complete local demo: an S3 emulator as the bucket (a model and training data), the gateway
    and its control listener (API, web pages with a development sign-in), and three people with keys
    and API tokens: alice (ml, needs carol's approval), bob (infra, approved instantly) and carol
    (security, approves). Prints what to paste to try it; Ctrl-C stops it and keeps --state-dir."""
    # Imported when run: the demo pulls in moto and boto3.
    from proxy.demo import run_demo

    run_demo(s3_port=s3_port, api_port=api_port, state_dir=state_dir, credentials_out=credentials_out)
