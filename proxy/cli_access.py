"""`grantgate` commands for access requests: ask, approve, deny, list, revoke, over the JSON API.

Also the admin commands behind them: `init` (a config from a preset) and `tokens` (API tokens, written
to the store directly). Registered on the main command group by proxy/cli.py.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from proxy.access.durations import format_remaining
from proxy.access.presets import PRESETS, render_preset
from proxy.cli import UserError, _echo_json, _iso, _now, _table, main
from proxy.cli_base import group_option, json_option
from proxy.cli_base import settings as _settings
from proxy.cli_base import with_store as _with_store
from proxy.client import ApiClient, ApiError, ClientConfig, load_client_config, save_client_config
from proxy.config import ConfigError
from proxy.identity.tokens import ApiToken
from proxy.store.sql import SqlStore
from proxy.store.workflow import WorkflowStore

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


# --- plumbing ---------------------------------------------------------------------------------------


def _client(ctx: click.Context) -> ApiClient:
    """The API client; the server config's public_url is the fallback address when --config is given."""
    fallback = None
    if ctx.find_root().obj is not None:
        try:
            fallback = _settings(ctx).server.public_url
        except ConfigError:
            fallback = None
    try:
        return ApiClient(load_client_config(fallback))
    except ApiError as exc:
        raise UserError(str(exc)) from None


def _call(ctx: click.Context, method: str, *args: Any, **kwargs: Any) -> Any:
    client = _client(ctx)
    try:
        return getattr(client, method)(*args, **kwargs)
    except ApiError as exc:
        raise UserError(str(exc)) from None


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return value.replace("T", " ").replace("Z", "")[:16]


def _parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _expires_in(grant: dict[str, Any]) -> str:
    if grant.get("revoked_at"):
        return "revoked"
    if not grant.get("expires_at"):
        return "standing"
    left = _parse_iso(grant["expires_at"]) - datetime.now(UTC)
    return "expired" if left.total_seconds() <= 0 else format_remaining(left)


def _grants_table(grants: Sequence[dict[str, Any]]) -> str:
    rows = [
        [g["id"], g["principal"], g["resource"], ",".join(g["actions"]), _expires_in(g), g.get("source", "")]
        for g in grants
    ]
    return _table(["ID", "PRINCIPAL", "RESOURCE", "ACTIONS", "EXPIRES IN", "SOURCE"], rows)


def _requests_table(requests: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            r["id"],
            r["status"] + (" (break-glass)" if r.get("break_glass") else ""),
            r["requester"],
            r["resource"],
            ",".join(r["actions"]),
            r["duration"],
            f"{len(r['approvals'])}/{r['approvals_required']}" if r["approvals_required"] else "-",
            _when(r["created_at"]),
        ]
        for r in requests
    ]
    return _table(
        ["ID", "STATUS", "REQUESTER", "RESOURCE", "ACTIONS", "FOR", "APPROVALS", "CREATED (UTC)"], rows
    )


def _describe_request(r: dict[str, Any]) -> str:
    lines = [
        f"Request {r['id']}: {r['status']}" + ("  [break-glass]" if r.get("break_glass") else ""),
        f"  requester:      {r['requester']}",
        f"  resource:       {r['resource']}  ({r['resource_name']})",
        f"  actions:        {', '.join(r['actions'])} for {r['duration']}",
        f"  justification:  {r['justification'] or '-'}",
        f"  created:        {_when(r['created_at'])} UTC",
    ]
    if r.get("ticket"):
        lines.append(f"  ticket:         {r['ticket']}")
    if r.get("starts_at"):
        lines.append(f"  starts:         {_when(r['starts_at'])} UTC (scheduled)")
    if r["status"] == "pending":
        lines.append(f"  pending until:  {_when(r['pending_until'])} UTC")
    if r["approvals_required"]:
        lines.append(f"  approvals:      {len(r['approvals'])} of {r['approvals_required']}")
    for a in r["approvals"]:
        comment = f": {a['comment']}" if a["comment"] else ""
        lines.append(f"    - {a['approver']} at {_when(a['at'])}{comment}")
    if r.get("decided_by"):
        comment = f" ({r['decision_comment']})" if r.get("decision_comment") else ""
        lines.append(f"  decided:        by {r['decided_by']} at {_when(r['decided_at'])}{comment}")
    if r.get("grant_id"):
        lines.append(f"  grant:          {r['grant_id']}")
    if r.get("needs_review"):
        lines.append("  review:         pending (break-glass access is reviewed after the fact)")
    elif r.get("reviewed_by"):
        lines.append(f"  reviewed:       by {r['reviewed_by']}: {r.get('review_comment') or '-'}")
    return "\n".join(lines)


def _outcome_line(r: dict[str, Any]) -> str:
    grant = r.get("grant")
    if r["status"] == "approved" and grant:
        until = f"until {_when(grant['expires_at'])} UTC" if grant.get("expires_at") else "with no expiry"
        if grant.get("starts_at"):
            until = f"from {_when(grant['starts_at'])} UTC {until}"
        what = f"{','.join(grant['actions'])} on {grant['resource']}"
        head = f"Granted: {grant['id']} gives {r['requester']} {what} {until}."
    elif r["status"] == "pending":
        need = r["approvals_required"] - len(r["approvals"])
        head = (
            f"Request {r['id']} is pending: {need} more approval(s) needed. "
            f"Follow it with `grantgate requests {r['id']}`."
        )
    else:
        head = f"Request {r['id']} is {r['status']}."
    message = r.get("message")
    return f"{head}\n{message}" if message else head


# --- init -------------------------------------------------------------------------------------------


@main.command("init")
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


# --- API tokens (admin, direct to the store) --------------------------------------------------------


@main.group()
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
    settings = _settings(ctx)

    async def create(store: SqlStore) -> tuple[ApiToken, str]:
        await store.ensure_principal(principal, groups or None)
        return await WorkflowStore(store).create_token(principal, now=_now(), description=description)

    token, secret = _with_store(settings, create)
    api_url = settings.server.public_url
    if as_json:
        _echo_json(
            {
                "id": token.id,
                "principal": token.principal,
                "token": secret,
                "api_url": api_url,
                "created_at": _iso(token.created_at),
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
    found = _with_store(_settings(ctx), lambda store: WorkflowStore(store).list_tokens(principal))
    if as_json:
        _echo_json(
            [
                {
                    "id": t.id,
                    "principal": t.principal,
                    "description": t.description,
                    "created_at": _iso(t.created_at),
                    "revoked_at": _iso(t.revoked_at),
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
        [t.id, t.principal, _when(_iso(t.created_at)), "active" if t.active else "revoked", t.description]
        for t in found
    ]
    click.echo(_table(["ID", "PRINCIPAL", "CREATED (UTC)", "STATUS", "DESCRIPTION"], rows))


@tokens.command("revoke")
@click.argument("token_id")
@click.pass_context
def tokens_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke an API token; it stops working at once."""
    found = _with_store(_settings(ctx), lambda store: WorkflowStore(store).revoke_token(token_id, now=_now()))
    if not found:
        raise UserError(f"unknown API token {token_id!r}")
    click.echo(f"revoked API token {token_id}")


# --- talking to the API -----------------------------------------------------------------------------


@main.command("login")
@click.option("--api-url", required=True, help="The control listener, e.g. https://grantgate.example.com.")
@click.option("--token", prompt=True, hide_input=True, help="Your API token (prompted if not given).")
def login(api_url: str, token: str) -> None:
    """Check an API token and save it (with the address) in ~/.config/grantgate/cli.toml."""
    config = ClientConfig(api_url.rstrip("/"), token.strip())
    try:
        me = ApiClient(config).whoami()
    except ApiError as exc:
        raise UserError(str(exc)) from None
    path = save_client_config(config)
    click.echo(f"logged in as {me['principal']}; saved to {path}")


@main.command("whoami")
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Who the API token belongs to, and what you may request and approve."""
    me = _call(ctx, "whoami")
    if as_json:
        _echo_json(me)
        return
    roles = ["admin"] if me["admin"] else []
    if me["approver_for"]:
        roles.append("approver for " + ", ".join(me["approver_for"]))
    click.echo(
        f"{me['principal']} (groups: {', '.join(me['groups']) or 'none'})"
        + (f"; {'; '.join(roles)}" if roles else "")
    )
    if not me["requestable"]:
        click.echo("You may not request any resource.")
        return
    rows = [
        [
            r["resource"],
            " ".join(r["paths"]),
            ",".join(r["actions"]),
            r["max_duration"],
            "instant" if r["instant"] else f"{r['approvals_required']} approval(s)",
        ]
        for r in me["requestable"]
    ]
    click.echo(_table(["RESOURCE", "PATHS", "ACTIONS", "MAX", "DECIDED BY"], rows))


@main.command("request")
@click.argument("resource")
@click.option(
    "--actions", default="read", show_default=True, help="Comma-separated: read, list, write, delete."
)
@click.option("--duration", default=None, help="How long, e.g. 2h, 1d. Default: the policy's default.")
@click.option("--justification", "-j", default="", help="Why you need it (the policy may require it).")
@click.option(
    "--break-glass", is_flag=True, help="Emergency access without approval, if the policy allows it."
)
@click.option("--ticket", default="", help="A ticket reference, e.g. ML-1234 (some rules require one).")
@click.option(
    "--starts-at",
    default=None,
    help="Scheduled access from this RFC 3339 time (e.g. 2025-06-01T22:00:00Z), for --duration.",
)
@json_option
@click.pass_context
def request_access(
    ctx: click.Context,
    resource: str,
    actions: str,
    duration: str | None,
    justification: str,
    break_glass: bool,
    ticket: str,
    starts_at: str | None,
    as_json: bool,
) -> None:
    """Ask for access to RESOURCE (s3://bucket/prefix, or a resource name such as `models`)."""
    body: dict[str, Any] = {
        "resource": resource,
        "actions": [a.strip() for a in actions.split(",") if a.strip()],
        "justification": justification,
        "break_glass": break_glass,
    }
    if duration:
        body["duration"] = duration
    if ticket:
        body["ticket"] = ticket
    if starts_at:
        body["starts_at"] = starts_at
    created = _call(ctx, "create_request", body)
    if as_json:
        _echo_json(created)
        return
    click.echo(_outcome_line(created))


@main.command("requests")
@click.argument("request_id", required=False)
@click.option("--status", type=click.Choice(["pending", "approved", "denied", "cancelled", "expired"]))
@click.option("--inbox", is_flag=True, help="Only pending requests you may approve now.")
@click.option("--requester", default=None, help="Only this requester's.")
@json_option
@click.pass_context
def requests_(
    ctx: click.Context,
    request_id: str | None,
    status: str | None,
    inbox: bool,
    requester: str | None,
    as_json: bool,
) -> None:
    """List the requests you can see (yours, those you approve), or show one REQUEST_ID."""
    if request_id:
        found = _call(ctx, "get_request", request_id)
        if as_json:
            _echo_json(found)
        else:
            click.echo(_describe_request(found))
        return
    listed = _call(ctx, "list_requests", status=status, requester=requester, approvable=inbox or None)
    if as_json:
        _echo_json(listed)
        return
    if not listed:
        click.echo("nothing to approve" if inbox else "no requests")
        return
    click.echo(_requests_table(listed))


def _decide(ctx: click.Context, request_id: str, verb: str, body: dict[str, Any], as_json: bool) -> None:
    decided = _call(ctx, "decide", request_id, verb, body)
    if as_json:
        _echo_json(decided)
        return
    if verb == "approve":
        click.echo(_outcome_line(decided))
    else:
        click.echo(f"Request {decided['id']} is {decided['status']}.")


@main.command("approve")
@click.argument("request_id")
@click.option("--comment", "-c", default="", help="Shown to the requester and audited.")
@json_option
@click.pass_context
def approve(ctx: click.Context, request_id: str, comment: str, as_json: bool) -> None:
    """Approve a request (you must be in one of its approver groups, and not its requester)."""
    _decide(ctx, request_id, "approve", {"comment": comment}, as_json)


@main.command("deny")
@click.argument("request_id")
@click.option("--comment", "-c", default="", help="Why: shown to the requester and audited.")
@json_option
@click.pass_context
def deny(ctx: click.Context, request_id: str, comment: str, as_json: bool) -> None:
    """Deny a pending request."""
    _decide(ctx, request_id, "deny", {"comment": comment}, as_json)


@main.command("cancel")
@click.argument("request_id")
@click.option("--reason", default="", help="Why, for the audit trail.")
@json_option
@click.pass_context
def cancel(ctx: click.Context, request_id: str, reason: str, as_json: bool) -> None:
    """Cancel your own pending request."""
    _decide(ctx, request_id, "cancel", {"reason": reason}, as_json)


@main.command("review")
@click.argument("request_id")
@click.option("--comment", "-c", required=True, help="What you checked.")
@json_option
@click.pass_context
def review(ctx: click.Context, request_id: str, comment: str, as_json: bool) -> None:
    """Review a break-glass request after the fact."""
    _decide(ctx, request_id, "review", {"comment": comment}, as_json)


@main.command("revoke")
@click.argument("grant_id")
@click.option("--reason", default="", help="Why, for the audit trail.")
@json_option
@click.pass_context
def revoke(ctx: click.Context, grant_id: str, reason: str, as_json: bool) -> None:
    """End a grant now (yours, one on a resource you approve, or any as an admin)."""
    grant = _call(ctx, "revoke_grant", grant_id, reason)
    if as_json:
        _echo_json(grant)
        return
    click.echo(
        f"revoked {grant['id']}: {grant['principal']} {','.join(grant['actions'])} on {grant['resource']}"
    )


@main.command("mine")
@click.option("--all", "show_all", is_flag=True, help="Include ended grants and decided requests.")
@json_option
@click.pass_context
def mine(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Your grants and your open requests."""
    me = _call(ctx, "whoami")["principal"]
    grants = _call(ctx, "list_grants", principal=me, active=None if show_all else True)
    requests = _call(ctx, "list_requests", requester=me, status=None if show_all else "pending")
    if as_json:
        _echo_json({"principal": me, "grants": grants, "requests": requests})
        return
    click.echo(f"Grants of {me}:")
    click.echo(_indent(_grants_table(grants)) if grants else "  none")
    click.echo("Requests:" if show_all else "Pending requests:")
    click.echo(_indent(_requests_table(requests)) if requests else "  none")


def list_grants_via_api(ctx: click.Context, principal: str | None, show_all: bool, as_json: bool) -> None:
    """`grantgate grants list --api`: the same listing, through the API and the caller's visibility."""
    found = _call(ctx, "list_grants", principal=principal, active=None if show_all else True)
    if as_json:
        _echo_json(found)
        return
    click.echo(_grants_table(found) if found else ("no grants" if show_all else "no active grants"))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
