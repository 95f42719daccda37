"""`grantgate init`: a complete, commented config (server, upstream, store, policy) from a preset."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import click

from proxy.access.presets import PRESETS, render_preset
from proxy.cli.common import UserError

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@click.command("init")
@click.option("--preset", type=click.Choice(PRESETS), required=True, help="The team size to start from.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("grantgate.toml"),
    show_default=True,
    help="Where to write the config; '-' prints it instead.",
)
@click.option("--bucket", default="my-ml-bucket", show_default=True, help="The bucket the policy protects.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(preset: str, out: Path, bucket: str, force: bool) -> None:
    """Write a complete, commented config (server, upstream, store, policy) for a team size.

    small: under 10 people, anyone asks with a justification, one approver.
    growing: 10-100, infra instant, others give a reason or get an approval.
    large: 100+, team membership, two approvers, networks, break-glass.
    """
    if not _BUCKET.fullmatch(bucket):
        raise UserError(f"invalid bucket name {bucket!r}")
    if str(out) == "-":
        click.echo(render_preset(preset, bucket=bucket), nl=False)
        return
    if out.exists() and not force:
        raise UserError(f"{out} already exists: use --force to overwrite it, or --out elsewhere")
    key_file = out.with_name(out.stem + ".key")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_preset(preset, bucket=bucket, key_file=key_file.name))
    created_key = not key_file.exists()
    if created_key:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as key:
            key.write(secrets.token_urlsafe(48))
    click.echo(
        f"wrote {out} ({preset} preset)" + (f" and a new server secret in {key_file}" if created_key else "")
    )
    click.echo(next_steps(out))


def next_steps(config: Path) -> str:
    """What a fresh config from `init` still needs before people can use it."""
    return (
        "next:\n"
        f"  1. [upstream] in {config}: the bucket's endpoint_url and region (credentials: botocore's\n"
        "     usual chain, or access_key_id / secret_access_key there)\n"
        "  2. [policy]: your group names, resources and approvers\n"
        "  3. sign-in for the request pages: [web.oidc] issuer and client_id, plus the client secret in\n"
        f"     {config.with_name('oidc-client-secret')} (or [web.trusted_headers] behind an SSO proxy)\n"
        "  4. optional: [slack] for approvals in Slack\n"
        f"  then: grantgate --config {config} db upgrade\n"
        f"        grantgate --config {config} serve\n"
        f"        grantgate --config {config} keys create NAME --group GROUP   (one per person or service)"
    )
