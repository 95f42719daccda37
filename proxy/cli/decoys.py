"""`grantgate decoys ...`: plant the configured decoy objects and list what was planted (admins only:
whoever can run it can read the config anyway)."""

from __future__ import annotations

import json

import click

from proxy.cli.common import actor, json_option, settings, with_store
from proxy.decoys.plant import DEFAULT_SIZE, PlantError, plant
from proxy.store.decoys import DecoyStore


@click.group()
def decoys() -> None:
    """Decoy objects: realistic weight files that nobody has a reason to read."""


@decoys.command("plant")
@click.option(
    "--size",
    type=click.IntRange(min=1024, max=1024**3),
    default=DEFAULT_SIZE,
    show_default=True,
    help="Bytes per decoy: a complete, valid file this large (S3 stores nothing sparsely).",
)
@json_option
@click.pass_context
def plant_command(ctx: click.Context, size: int, as_json: bool) -> None:
    """Write every decoy of `[policy.resources.*] decoys` into the bucket and record it."""
    config = settings(ctx)
    try:
        planted = with_store(config, lambda store: plant(config, store, actor=actor(), size=size))
    except PlantError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in planted], indent=2))
        return
    if not planted:
        click.echo("no decoys configured: add `decoys = [...]` to a [policy.resources.NAME] section")
    for p in planted:
        click.echo(f"planted s3://{p.bucket}/{p.key}  ({p.format}, {p.size} bytes, resource {p.resource})")


@decoys.command("list")
@json_option
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """The decoys planted so far."""
    planted = with_store(settings(ctx), lambda store: DecoyStore(store).list())
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in planted], indent=2))
        return
    for p in planted:
        click.echo(
            f"s3://{p.bucket}/{p.key}  {p.format}  {p.size}  {p.planted_at:%Y-%m-%d %H:%M} {p.planted_by}"
        )
