"""The `grantgate sidecar` command: options in, a running loopback listener out."""

from __future__ import annotations

from pathlib import Path

import click

from proxy.sidecar.server import DEFAULT_ROLE_ARN, SidecarOptions, parse_listen, run_sidecar

DEFAULT_TOKEN_FILE = Path("/var/run/secrets/grantgate/token")


@click.command()
@click.option(
    "--gateway",
    "gateway_url",
    required=True,
    envvar="GRANTGATE_GATEWAY",
    help="The central gateway's S3 endpoint, e.g. http://grantgate.ns.svc:9000. Env: GRANTGATE_GATEWAY.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_TOKEN_FILE,
    show_default=True,
    envvar="GRANTGATE_TOKEN_FILE",
    help="The pod's projected service-account token (re-read at every exchange).",
)
@click.option(
    "--listen",
    default="127.0.0.1:9000",
    show_default=True,
    help="Loopback HOST:PORT the job's endpoint_url points at. Non-loopback addresses are refused.",
)
@click.option("--region", default="us-east-1", show_default=True, help="Region in the signatures sent on.")
@click.option("--role-arn", default=DEFAULT_ROLE_ARN, show_default=True, help="RoleArn sent to STS.")
@click.option("--session-name", default="", help="RoleSessionName for STS. Default: $POD_NAME or hostname.")
@click.option(
    "--duration",
    type=click.IntRange(900, 43200),
    default=None,
    help="Requested session lifetime in seconds (the gateway caps it).",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="CA bundle to verify an https gateway with.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def sidecar(
    gateway_url: str,
    token_file: Path,
    listen: str,
    region: str,
    role_arn: str,
    session_name: str,
    duration: int | None,
    ca_file: Path | None,
    log_level: str,
) -> None:
    """Run next to a job: accept its requests with any placeholder credentials on loopback, re-sign them
    with temporary credentials obtained for the pod's token from the gateway's STS, and stream them on."""
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    options = SidecarOptions(
        gateway_url=gateway_url.rstrip("/"),
        token_file=token_file,
        listen_host=host,
        listen_port=port,
        region=region,
        role_arn=role_arn,
        session_name=session_name,
        duration_seconds=duration,
        ca_file=ca_file,
    )
    run_sidecar(options, log_level=log_level)
