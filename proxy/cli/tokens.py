"""`grantgate tokens`: API tokens for the JSON API and the request/approve commands, created, listed and
revoked in the store (admin)."""

from __future__ import annotations

import click

from proxy.access.durations import iso
from proxy.cli.common import (
    UserError,
    echo_json,
    group_option,
    json_option,
    now,
    settings,
    table,
    with_store,
)
from proxy.cli.remote import when
from proxy.identity.tokens import ApiToken
from proxy.store.sql import SqlStore
from proxy.store.workflow import WorkflowStore


@click.group()
def tokens() -> None:
    """API tokens for the JSON API and the request/approve commands (admin, direct to the database)."""


@tokens.command("create")
@click.argument("principal")
@group_option
@click.option("--description", default="", help="What the token is for.")
@json_option
@click.pass_context
def tokens_create(
    ctx: click.Context, principal: str, groups: tuple[str, ...], description: str, as_json: bool
) -> None:
    """Create an API token for PRINCIPAL (created if new). Printed once; only its hash is stored."""
    loaded = settings(ctx)

    async def create(store: SqlStore) -> tuple[ApiToken, str]:
        await store.ensure_principal(principal, groups or None)
        return await WorkflowStore(store).create_token(principal, now=now(), description=description)

    token, secret = with_store(loaded, create)
    api_url = loaded.server.public_url
    if as_json:
        echo_json(
            {
                "id": token.id,
                "principal": token.principal,
                "token": secret,
                "api_url": api_url,
                "created_at": iso(token.created_at),
            }
        )
        return
    click.echo(
        f"Created API token {token.id} for {principal}. It is shown only now.\n\n"
        f"  {secret}\n\n"
        "Use it with the CLI:\n"
        f"  export GRANTGATE_API_URL={api_url}\n"
        f"  export GRANTGATE_TOKEN={secret}\n"
        "  grantgate whoami\n"
        "or with the API:\n"
        f'  curl -H "Authorization: Bearer $GRANTGATE_TOKEN" {api_url}/api/v1/whoami'
    )


@tokens.command("list")
@click.option("--principal", default=None, help="Only this principal's tokens.")
@json_option
@click.pass_context
def tokens_list(ctx: click.Context, principal: str | None, as_json: bool) -> None:
    """List API tokens (never the tokens themselves)."""
    found = with_store(settings(ctx), lambda store: WorkflowStore(store).list_tokens(principal))
    if as_json:
        echo_json(
            [
                {
                    "id": t.id,
                    "principal": t.principal,
                    "description": t.description,
                    "created_at": iso(t.created_at),
                    "revoked_at": iso(t.revoked_at),
                    "active": t.active,
                }
                for t in found
            ]
        )
        return
    if not found:
        click.echo("no API tokens")
        return
    rows = [
        [t.id, t.principal, when(iso(t.created_at)), "active" if t.active else "revoked", t.description]
        for t in found
    ]
    click.echo(table(["ID", "PRINCIPAL", "CREATED (UTC)", "STATUS", "DESCRIPTION"], rows))


@tokens.command("revoke")
@click.argument("token_id")
@click.pass_context
def tokens_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke an API token; it stops working at once."""
    found = with_store(settings(ctx), lambda store: WorkflowStore(store).revoke_token(token_id, now=now()))
    if not found:
        raise UserError(f"unknown API token {token_id!r}")
    click.echo(f"revoked API token {token_id}")
