"""`grantgate keys`: long-lived access keys (created, listed, revoked in the store) and sessions."""

from __future__ import annotations

import shlex
from datetime import timedelta

import click

from proxy.access.durations import format_duration, iso, parse_duration
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
from proxy.config import Settings
from proxy.identity.keys import AccessKey
from proxy.identity.principals import Principal
from proxy.identity.sessions import issue_session
from proxy.store.sql import SqlStore

# Session tokens cannot be revoked one by one (they are checked without a lookup), so keep them short-lived.
MAX_SESSION_TTL = timedelta(days=7)


def _s3_endpoint(settings: Settings) -> str:
    server = settings.server
    scheme = "https" if server.tls_cert else "http"
    host = server.s3_host if server.s3_host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{server.s3_port}"


@click.group()
def keys() -> None:
    """Long-lived access keys and temporary session credentials."""


@keys.command("create")
@click.argument("principal")
@group_option
@click.option("--description", default="", help="What the key is for.")
@json_option
@click.pass_context
def keys_create(
    ctx: click.Context, principal: str, groups: tuple[str, ...], description: str, as_json: bool
) -> None:
    """Create an access key for PRINCIPAL (created if new). The secret is printed once, never stored."""
    loaded = settings(ctx)
    server_key = loaded.server_key()

    async def create(store: SqlStore) -> tuple[Principal, AccessKey, str]:
        who = await store.ensure_principal(principal, groups or None)
        key, secret = await store.create_access_key(principal, server_key, now=now(), description=description)
        return who, key, secret

    who, key, secret = with_store(loaded, create)
    endpoint = _s3_endpoint(loaded)
    if as_json:
        echo_json(
            {
                "access_key_id": key.access_key_id,
                "secret_access_key": secret,
                "principal": who.name,
                "groups": sorted(who.groups),
                "description": key.description,
                "created_at": iso(key.created_at),
                "endpoint_url": endpoint,
            }
        )
        return
    group_note = f" (groups: {', '.join(sorted(who.groups))})" if who.groups else ""
    click.echo(
        f"Created an access key for {who.name}{group_note}.\n"
        "The secret is shown only now: GrantGate does not store it.\n\n"
        f"  Access key id:      {key.access_key_id}\n"
        f"  Secret access key:  {secret}\n\n"
        "AWS CLI:\n"
        f"  aws configure set aws_access_key_id {key.access_key_id} --profile grantgate\n"
        f"  aws configure set aws_secret_access_key {shlex.quote(secret)} --profile grantgate\n"
        f"  aws --profile grantgate --endpoint-url {endpoint} s3 ls s3://BUCKET/\n\n"
        "boto3:\n"
        f'  boto3.client("s3", endpoint_url="{endpoint}",\n'
        f'               aws_access_key_id="{key.access_key_id}", aws_secret_access_key="{secret}")'
    )


@keys.command("list")
@click.option("--principal", default=None, help="Only this principal's keys.")
@json_option
@click.pass_context
def keys_list(ctx: click.Context, principal: str | None, as_json: bool) -> None:
    """List access keys (never their secrets)."""
    found = with_store(settings(ctx), lambda store: store.list_access_keys(principal))
    if as_json:
        echo_json(
            [
                {
                    "access_key_id": k.access_key_id,
                    "principal": k.principal,
                    "description": k.description,
                    "created_at": iso(k.created_at),
                    "revoked_at": iso(k.revoked_at),
                    "active": k.active,
                }
                for k in found
            ]
        )
        return
    if not found:
        click.echo("no access keys")
        return
    rows = [
        [
            k.access_key_id,
            k.principal,
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            "active" if k.active else "revoked",
            k.description,
        ]
        for k in found
    ]
    click.echo(table(["KEY ID", "PRINCIPAL", "CREATED (UTC)", "STATUS", "DESCRIPTION"], rows))


@keys.command("revoke")
@click.argument("access_key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, access_key_id: str) -> None:
    """Revoke an access key; gateways stop accepting it within a second."""
    found = with_store(settings(ctx), lambda store: store.revoke_access_key(access_key_id, now=now()))
    if not found:
        raise UserError(f"unknown access key {access_key_id!r}")
    click.echo(f"revoked {access_key_id}")


@keys.command("session")
@click.argument("principal")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime, e.g. 30m, 1h, 12h (at most 7d).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON in the AWS credential_process format (usable as `credential_process = ...`).",
)
@click.pass_context
def keys_session(ctx: click.Context, principal: str, ttl: str, as_json: bool) -> None:
    """Issue temporary credentials (with a session token) for an existing PRINCIPAL."""
    lifetime = parse_duration(ttl)
    if lifetime > MAX_SESSION_TTL:
        raise UserError(f"--ttl {ttl} is too long: sessions last at most {format_duration(MAX_SESSION_TTL)}")
    loaded = settings(ctx)
    server_key = loaded.server_key()
    who = with_store(loaded, lambda store: store.get_principal(principal))
    if who is None:
        raise UserError(
            f"unknown principal {principal!r}: create it with `grantgate keys create {principal}`"
        )
    creds = issue_session(server_key, who, now=now(), ttl=lifetime, source="cli")
    if as_json:
        echo_json(
            {
                "Version": 1,
                "AccessKeyId": creds.access_key_id,
                "SecretAccessKey": creds.secret_access_key,
                "SessionToken": creds.session_token,
                "Expiration": iso(creds.expiration),
            }
        )
        return
    click.echo(
        f"# Temporary credentials for {who.name}, valid until {iso(creds.expiration)} ({ttl}).\n"
        f'# Endpoint: {_s3_endpoint(loaded)}. Load them with: eval "$(grantgate keys session ...)"\n'
        f"export AWS_ACCESS_KEY_ID={creds.access_key_id}\n"
        f"export AWS_SECRET_ACCESS_KEY={shlex.quote(creds.secret_access_key)}\n"
        f"export AWS_SESSION_TOKEN={shlex.quote(creds.session_token)}"
    )
