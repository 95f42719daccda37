"""`grantgate`: run the gateway, and manage access keys, sessions and grants from a shell.

Thin over the store and identity modules; every user mistake ends in one readable line and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from proxy.access.durations import format_duration, format_remaining, parse_duration
from proxy.access.grants import Grant, parse_actions, parse_resource
from proxy.cli_audit import audit
from proxy.cli_base import actor as _actor
from proxy.cli_base import group_option, json_option, missing_sqlite_file
from proxy.cli_base import settings as _settings
from proxy.cli_base import with_store as _with_store
from proxy.cli_decoys import decoys
from proxy.config import ConfigError, Settings
from proxy.control.web_settings import dev_login_refusal
from proxy.identity.keys import AccessKey
from proxy.identity.principals import Principal
from proxy.identity.sessions import issue_session
from proxy.sidecar.command import sidecar
from proxy.store.sql import (
    SqlStore,
    StoreError,
    database_revision,
    head_revision,
    upgrade_database,
)

T = TypeVar("T")

# Session tokens cannot be revoked one by one (they are checked without a lookup), so keep them short-lived.
MAX_SESSION_TTL = timedelta(days=7)


class UserError(click.ClickException):
    """A mistake in the command, the config or the data it names: shown as one line, exit code 2."""

    exit_code = 2


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
@click.version_option(package_name="grantgate", prog_name="grantgate")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """GrantGate: an S3 gateway that admits only granted, time-bound, audited access."""
    ctx.obj = config_path


# --- plumbing ---------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _s3_endpoint(settings: Settings) -> str:
    server = settings.server
    scheme = "https" if server.tls_cert else "http"
    host = server.s3_host if server.s3_host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{server.s3_port}"


# --- serve / demo -----------------------------------------------------------------------------------


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the S3 gateway and the control API."""
    from proxy.workers import run_server

    settings = _settings(ctx)
    refusal = dev_login_refusal(settings.web, settings.server.control_host)
    if refusal is not None:
        raise ConfigError(refusal)
    run_server(settings)


@main.command()
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
    from proxy.demo import run_demo

    run_demo(s3_port=s3_port, api_port=api_port, state_dir=state_dir, credentials_out=credentials_out)


# --- db ---------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Migrate the database to the schema this version of GrantGate needs."""
    revision = asyncio.run(upgrade_database(_settings(ctx).store_url()))
    click.echo(f"database is at revision {revision} (head)")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the database's schema revision and the one this version needs."""
    url = _settings(ctx).store_url()
    missing = missing_sqlite_file(url)
    current = None if missing is not None else asyncio.run(database_revision(url))
    head = head_revision()
    if current == head:
        click.echo(f"{current} (head)")
    else:
        click.echo(f"{current or 'none (empty database)'}; head is {head}: run `grantgate db upgrade`")


# --- keys -------------------------------------------------------------------------------------------


@main.group()
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
    settings = _settings(ctx)
    server_key = settings.server_key()

    async def create(store: SqlStore) -> tuple[Principal, AccessKey, str]:
        who = await store.ensure_principal(principal, groups or None)
        key, secret = await store.create_access_key(
            principal, server_key, now=_now(), description=description
        )
        return who, key, secret

    who, key, secret = _with_store(settings, create)
    endpoint = _s3_endpoint(settings)
    if as_json:
        _echo_json(
            {
                "access_key_id": key.access_key_id,
                "secret_access_key": secret,
                "principal": who.name,
                "groups": sorted(who.groups),
                "description": key.description,
                "created_at": _iso(key.created_at),
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
    found = _with_store(_settings(ctx), lambda store: store.list_access_keys(principal))
    if as_json:
        _echo_json(
            [
                {
                    "access_key_id": k.access_key_id,
                    "principal": k.principal,
                    "description": k.description,
                    "created_at": _iso(k.created_at),
                    "revoked_at": _iso(k.revoked_at),
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
    click.echo(_table(["KEY ID", "PRINCIPAL", "CREATED (UTC)", "STATUS", "DESCRIPTION"], rows))


@keys.command("revoke")
@click.argument("access_key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, access_key_id: str) -> None:
    """Revoke an access key; gateways stop accepting it within a second."""
    found = _with_store(_settings(ctx), lambda store: store.revoke_access_key(access_key_id, now=_now()))
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
    settings = _settings(ctx)
    server_key = settings.server_key()
    who = _with_store(settings, lambda store: store.get_principal(principal))
    if who is None:
        raise UserError(
            f"unknown principal {principal!r}: create it with `grantgate keys create {principal}`"
        )
    creds = issue_session(server_key, who, now=_now(), ttl=lifetime, source="cli")
    if as_json:
        _echo_json(
            {
                "Version": 1,
                "AccessKeyId": creds.access_key_id,
                "SecretAccessKey": creds.secret_access_key,
                "SessionToken": creds.session_token,
                "Expiration": _iso(creds.expiration),
            }
        )
        return
    click.echo(
        f"# Temporary credentials for {who.name}, valid until {_iso(creds.expiration)} ({ttl}).\n"
        f'# Endpoint: {_s3_endpoint(settings)}. Load them with: eval "$(grantgate keys session ...)"\n'
        f"export AWS_ACCESS_KEY_ID={creds.access_key_id}\n"
        f"export AWS_SECRET_ACCESS_KEY={shlex.quote(creds.secret_access_key)}\n"
        f"export AWS_SESSION_TOKEN={shlex.quote(creds.session_token)}"
    )


# --- grants -----------------------------------------------------------------------------------------


@main.group()
def grants() -> None:
    """Grants: who may do what, where, until when."""


@grants.command("add")
@click.argument("principal")
@click.argument("resource")
@click.option("--actions", required=True, help="Comma-separated: read, list, write, delete, admin.")
@click.option("--duration", default=None, help="How long the grant lasts, e.g. 2h, 1d, 1h30m.")
@click.option("--standing", is_flag=True, help="No expiry (still audited and revocable).")
@json_option
@click.pass_context
def grants_add(
    ctx: click.Context,
    principal: str,
    resource: str,
    actions: str,
    duration: str | None,
    standing: bool,
    as_json: bool,
) -> None:
    """Grant PRINCIPAL ACTIONS on RESOURCE (s3://bucket/prefix) for --duration, or --standing."""
    if (duration is None) == (not standing):
        raise UserError("give exactly one of --duration (e.g. --duration 2h) or --standing")
    bucket, prefix = parse_resource(resource)
    wanted = parse_actions(actions)
    lifetime = None if duration is None else parse_duration(duration)
    now = _now()

    async def add(store: SqlStore) -> tuple[Grant, bool]:
        known = await store.get_principal(principal) is not None
        grant = await store.add_grant(
            principal,
            bucket,
            prefix,
            wanted,
            now=now,
            expires_at=None if lifetime is None else now + lifetime,
            source="cli",
            created_by=_actor(),
        )
        return grant, known

    grant, known = _with_store(_settings(ctx), add)
    if not known:
        click.echo(
            f"note: principal {principal!r} has no access key yet (`grantgate keys create {principal}`)",
            err=True,
        )
    if as_json:
        _echo_json(_grant_json(grant))
        return
    until = "standing (no expiry)" if grant.expires_at is None else f"until {_iso(grant.expires_at)}"
    click.echo(f"granted {grant.id}: {grant.principal} {_actions(grant)} on {grant.resource}, {until}")


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
        from proxy.cli_access import list_grants_via_api

        list_grants_via_api(ctx, principal, show_all, as_json)
        return
    now = _now()
    found = _with_store(
        _settings(ctx),
        lambda store: store.list_grants(principal=principal, active_at=None if show_all else now),
    )
    if as_json:
        _echo_json([_grant_json(g) for g in found])
        return
    if not found:
        click.echo("no grants" if show_all else "no active grants")
        return
    rows = [[g.id, g.principal, g.resource, _actions(g), _expires_in(g, now)] for g in found]
    click.echo(_table(["ID", "PRINCIPAL", "RESOURCE", "ACTIONS", "EXPIRES IN"], rows))


@grants.command("revoke")
@click.argument("grant_id")
@click.option("--reason", default="", help="Why, for the audit trail.")
@click.pass_context
def grants_revoke(ctx: click.Context, grant_id: str, reason: str) -> None:
    """Revoke a grant; gateways stop honouring it within a second."""
    grant = _with_store(
        _settings(ctx),
        lambda store: store.revoke_grant(grant_id, now=_now(), actor=_actor(), reason=reason),
    )
    if grant is None:
        raise UserError(f"unknown grant {grant_id!r}")
    click.echo(f"revoked {grant.id}: {grant.principal} {_actions(grant)} on {grant.resource}")


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


def _grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "principal": grant.principal,
        "resource": grant.resource,
        "bucket": grant.bucket,
        "prefix": grant.prefix,
        "actions": sorted(a.value for a in grant.actions),
        "created_at": _iso(grant.created_at),
        "expires_at": _iso(grant.expires_at),
        "revoked_at": _iso(grant.revoked_at),
        "source": grant.source,
        "request_id": grant.request_id,
        **grant.extra,
    }


main.add_command(audit)
main.add_command(sidecar)
main.add_command(decoys)

# Access requests, approvals, API tokens and `init`: they register themselves on `main`.
import proxy.cli_access  # noqa: E402, F401
