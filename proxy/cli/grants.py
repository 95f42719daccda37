"""`grantgate grants`: add, list and revoke grants in the store (admin), or list them through the API."""

from __future__ import annotations

from datetime import datetime

import click

from proxy.access.budgets import Budget, Usage, describe, parse_size
from proxy.access.durations import format_remaining, iso, parse_duration
from proxy.access.grants import Grant, parse_actions, parse_resource
from proxy.access.views import grant_to_json
from proxy.cli import remote
from proxy.cli.common import UserError, actor, echo_json, json_option, now, settings, table, with_store
from proxy.store.sql import SqlStore
from proxy.workflow.budgets import usage_of


@click.group()
def grants() -> None:
    """Grants: who may do what, where, until when."""


@grants.command("add")
@click.argument("principal")
@click.argument("resource")
@click.option("--actions", required=True, help="Comma-separated: read, list, write, create, delete, admin.")
@click.option("--duration", default=None, help="How long the grant lasts, e.g. 2h, 1d, 1h30m.")
@click.option("--standing", is_flag=True, help="No expiry (still audited and revocable).")
@click.option("--max-bytes", default=None, help="Byte budget: bytes served in all, e.g. 10GiB, 500MB.")
@click.option("--max-objects", type=int, default=None, help="Budget: distinct objects read, at most.")
@click.option("--single-use", is_flag=True, help="Serve each byte of each object at most once.")
@json_option
@click.pass_context
def grants_add(
    ctx: click.Context,
    principal: str,
    resource: str,
    actions: str,
    duration: str | None,
    standing: bool,
    max_bytes: str | None,
    max_objects: int | None,
    single_use: bool,
    as_json: bool,
) -> None:
    """Grant PRINCIPAL ACTIONS on RESOURCE (s3://bucket/prefix) for --duration, or --standing,
    within a budget if --max-bytes, --max-objects or --single-use is given."""
    if (duration is None) == (not standing):
        raise UserError("give exactly one of --duration (e.g. --duration 2h) or --standing")
    bucket, prefix = parse_resource(resource)
    wanted = parse_actions(actions)
    lifetime = None if duration is None else parse_duration(duration)
    budget = _budget(max_bytes, max_objects, single_use)
    at = now()

    async def add(store: SqlStore) -> tuple[Grant, bool]:
        known = await store.get_principal(principal) is not None
        grant = await store.add_grant(
            principal,
            bucket,
            prefix,
            wanted,
            now=at,
            expires_at=None if lifetime is None else at + lifetime,
            source="cli",
            created_by=actor(),
            budget=budget,
        )
        return grant, known

    grant, known = with_store(settings(ctx), add)
    if not known:
        click.echo(
            f"note: principal {principal!r} has no access key yet (`grantgate keys create {principal}`)",
            err=True,
        )
    if as_json:
        echo_json(grant_to_json(grant))
        return
    until = "standing (no expiry)" if grant.expires_at is None else f"until {iso(grant.expires_at)}"
    within = "" if budget is None else f", budget: {describe(budget)}"
    click.echo(
        f"granted {grant.id}: {grant.principal} {_actions(grant)} on {grant.resource}, {until}{within}"
    )


@grants.command("list")
@click.option("--principal", default=None, help="Only this principal's grants.")
@click.option("--all", "show_all", is_flag=True, help="Include expired and revoked grants.")
@json_option
@click.option(
    "--api", "via_api", is_flag=True, help="Ask the API with your token (GRANTGATE_API_URL, GRANTGATE_TOKEN)."
)
@click.pass_context
def grants_list(
    ctx: click.Context, principal: str | None, show_all: bool, as_json: bool, via_api: bool = False
) -> None:
    """List active grants (all of them with --all)."""
    if via_api:
        _list_via_api(ctx, principal, show_all, as_json)
        return
    at = now()

    async def listed(store: SqlStore) -> tuple[list[Grant], dict[str, Usage]]:
        found = await store.list_grants(principal=principal, active_at=None if show_all else at)
        return found, await usage_of(store, found)

    found, used = with_store(settings(ctx), listed)
    if as_json:
        echo_json([grant_to_json(g, usage=used.get(g.id)) for g in found])
        return
    if not found:
        click.echo("no grants" if show_all else "no active grants")
        return
    rows = [
        [
            g.id,
            g.principal,
            g.resource,
            _actions(g),
            _expires_in(g, at),
            describe(g.budget, used.get(g.id, Usage())),
        ]
        for g in found
    ]
    click.echo(table(["ID", "PRINCIPAL", "RESOURCE", "ACTIONS", "EXPIRES IN", "BUDGET"], rows))


@grants.command("revoke")
@click.argument("grant_id")
@click.option("--reason", default="", help="Why, for the audit trail.")
@click.pass_context
def grants_revoke(ctx: click.Context, grant_id: str, reason: str) -> None:
    """Revoke a grant; gateways stop honouring it within a second."""
    grant = with_store(
        settings(ctx),
        lambda store: store.revoke_grant(grant_id, now=now(), actor=actor(), reason=reason),
    )
    if grant is None:
        raise UserError(f"unknown grant {grant_id!r}")
    click.echo(f"revoked {grant.id}: {grant.principal} {_actions(grant)} on {grant.resource}")


def _budget(max_bytes: str | None, max_objects: int | None, single_use: bool) -> Budget | None:
    """The budget the options ask for, None for none; a bad size or count is a one-line error."""
    try:
        budget = Budget(None if max_bytes is None else parse_size(max_bytes), max_objects, single_use)
    except ValueError as exc:
        raise UserError(f"--max-bytes/--max-objects: {exc}") from None
    return budget if budget.limited else None


def _actions(grant: Grant) -> str:
    return ",".join(sorted(a.value for a in grant.actions))


def _expires_in(grant: Grant, now: datetime) -> str:
    if grant.revoked_at is not None and grant.revoked_at <= now:
        return "revoked"
    if grant.expires_at is None:
        return "standing"
    if grant.expires_at <= now:
        return "expired"
    return format_remaining(grant.expires_at - now)


def _list_via_api(ctx: click.Context, principal: str | None, show_all: bool, as_json: bool) -> None:
    """`grantgate grants list --api`: the same listing, through the API and the caller's visibility."""
    found = remote.call(ctx, "list_grants", principal=principal, active=None if show_all else True)
    if as_json:
        echo_json(found)
        return
    click.echo(remote.grants_table(found) if found else ("no grants" if show_all else "no active grants"))
