"""`grantgate audit`: query and export the audit trail, verify its hash chain, show grant usage and
who had access to a resource when.

With `--config` (or GRANTGATE_CONFIG) it works on the store directly, like the other admin commands:
whoever runs it holds the database. Without, it asks the JSON API (GRANTGATE_API_URL and
GRANTGATE_TOKEN, or `grantgate login`) with the caller's token and rights.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click

from proxy.access.budgets import format_size
from proxy.audit.records import Anchor, iso, parse_moment
from proxy.audit.store import AuditQuery, AuditStore, StoredEvent
from proxy.cli.common import UserError, actor, json_option, settings, table, with_store
from proxy.client import ApiClient, ApiError, load_client_config
from proxy.control.audit_api import history_json
from proxy.control.trail import area_of, history, history_range
from proxy.store.sql import SqlStore
from proxy.store.suspensions import GrantSuspensions

T = TypeVar("T")


def _with_audit(ctx: click.Context, action: Callable[[AuditStore], Awaitable[T]]) -> T:
    return with_store(settings(ctx), lambda store: action(AuditStore(store)))


def _api(ctx: click.Context) -> ApiClient | None:
    """The API client when neither a server config nor a store was given (the database is not this
    caller's), else None."""
    if ctx.find_root().obj is not None or os.environ.get("GRANTGATE_STORE_URL"):
        return None
    try:
        return ApiClient(load_client_config())
    except ApiError as exc:
        raise click.ClickException(
            f"{exc}; or, on the gateway's host, give --config FILE to read its database"
        ) from None


def _ask(client: ApiClient, path: str, **query: Any) -> Any:
    try:
        return client.call("GET", path, **query)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None


def _api_filters(options: dict[str, Any]) -> dict[str, Any]:
    names = ("principal", "resource", "grant", "decision", "kind", "since", "until")
    return {name: options.get(name) or None for name in names}


def _query(options: dict[str, Any]) -> AuditQuery:
    now = datetime.now(UTC)
    return AuditQuery(
        principal=options.get("principal"),
        resource=options.get("resource"),
        grant_id=options.get("grant"),
        decision=options.get("decision"),
        kind=options.get("kind"),
        since=parse_moment(options["since"], now) if options.get("since") else None,
        until=parse_moment(options["until"], now) if options.get("until") else None,
        limit=options.get("limit"),
        latest=True,
    )


def _filters(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--principal", default=None, help="Only events of this principal."),
            click.option("--resource", default=None, help="A resource name, or s3://bucket/prefix."),
            click.option("--grant", default=None, help="Only events under this grant id."),
            click.option("--decision", default=None, help="allow, deny or error (requests); or a status."),
            click.option(
                "--kind", default=None, help='Event kind, e.g. s3_request; "anomaly." for all alerts.'
            ),
            click.option("--since", default=None, help="ISO 8601 time, or a duration back from now (24h)."),
            click.option("--until", default=None, help="ISO 8601 time, or a duration back from now."),
        ]
    ):
        command = option(command)
    return command


def _line(event: StoredEvent) -> list[str]:
    body = event.body
    detail = body.get("event", {})
    what = body.get("target") or body.get("resource") or ""
    if body["kind"] == "s3_request":
        what = f"{detail.get('operation') or detail.get('method')} {what}".strip()
    elif body["kind"].startswith("anomaly."):
        what = detail.get("message", what)
    return [
        str(event.seq),
        body["at"][:19].replace("T", " "),
        body["kind"],
        body.get("principal") or "-",
        body.get("decision") or "-",
        body.get("grant_id") or "-",
        what,
    ]


_COLUMNS = ("SEQ", "TIME (UTC)", "KIND", "PRINCIPAL", "DECISION", "GRANT", "WHAT")


@click.group(invoke_without_command=True)
@_filters
@click.option(
    "--limit", type=click.IntRange(1), default=100, show_default=True, help="The most recent this many."
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one event per line.")
@click.pass_context
def audit(ctx: click.Context, /, as_json: bool, **options: Any) -> None:
    """The audit trail: list events (filtered), or see the subcommands."""
    if ctx.invoked_subcommand is not None:
        return
    client = _api(ctx)
    if client is not None:
        found = _ask(client, "/audit", **_api_filters(options), limit=options.get("limit"))["events"]
        events = [StoredEvent.from_dict(e) for e in found]
    else:
        query = _query(options)
        events = _with_audit(ctx, lambda a: a.query(query))
    if as_json:
        for event in events:
            click.echo(json.dumps(event.as_dict()))
        return
    if not events:
        click.echo("no matching audit events")
        return
    click.echo(table(_COLUMNS, [_line(e) for e in events]))


@audit.command("export")
@_filters
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
@click.pass_context
def audit_export(ctx: click.Context, /, output: Path | None, **options: Any) -> None:
    """Export matching events as JSON lines (for a SIEM), oldest first."""
    client = _api(ctx)
    if client is not None:
        lines = _ask(client, "/audit", **_api_filters(options), format="jsonl")
        text = "".join(json.dumps(e) + "\n" for e in lines)
        if output:
            output.write_text(text, encoding="utf-8")
            click.echo(f"exported {len(lines)} events to {output}", err=True)
        else:
            click.echo(text, nl=False)
        return
    query = _query({**options, "limit": None})

    async def export(store: AuditStore) -> int:
        count = 0
        out = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            async for event in store.stream(query):
                out.write(json.dumps(event.as_dict()) + "\n")
                count += 1
        finally:
            if output:
                out.close()
        return count

    count = _with_audit(ctx, export)
    if output:
        click.echo(f"exported {count} events to {output}", err=True)


@audit.command("verify")
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    metavar="SEQ:HASH",
    help="A link published earlier (the gateway's audit_anchor log lines): the chain must still hold it.",
)
@json_option
@click.pass_context
def audit_verify(ctx: click.Context, anchors: tuple[str, ...], as_json: bool) -> None:
    """Prove that no audit event was altered or removed; exit 1 at the first broken link.

    Without anchors this catches any edit short of rebuilding the chain; with the anchors the gateway
    logged, a store rewritten or cut back before the last of them is caught too."""
    try:
        parsed = [Anchor.parse(a) for a in anchors]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--anchor") from None
    client = _api(ctx)
    if client is not None:
        if parsed:
            raise click.UsageError("--anchor needs --config: the API checks the chain without anchors")
        report = _ask(client, "/audit/verify")
    else:
        report = _with_audit(ctx, lambda a: a.verify(parsed)).as_dict()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif report["ok"]:
        checked, head = report["checked"], report["head_seq"]
        click.echo(f"audit trail intact: {checked} events, chain head at event {head}")
    else:
        broken = report["first_broken"]
        click.echo(
            f"audit trail BROKEN at event {broken['seq']}: {broken['problem']} "
            f"({report['checked']} events verified before it)"
        )
    if not report["ok"]:
        ctx.exit(1)


@audit.command("usage")
@click.argument("grant_id")
@json_option
@click.pass_context
def audit_usage(ctx: click.Context, grant_id: str, as_json: bool) -> None:
    """What was done under GRANT_ID: objects and bytes read and written, first and last use."""
    client = _api(ctx)
    if client is not None:
        data = _ask(client, f"/audit/usage/{quote(grant_id, safe='')}")
    else:
        usage = _with_audit(ctx, lambda a: a.usage(grant_id))
        data = (
            usage.as_dict()
            if usage is not None
            else {"grant_id": grant_id, "requests": 0, "objects_read": 0, "bytes_read": 0}
            | {"objects_written": 0, "bytes_written": 0, "first_used_at": None, "last_used_at": None}
        )
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["requests"]:
        click.echo(f"grant {grant_id}: no recorded use")
        return
    click.echo(
        f"grant {grant_id} ({data['principal']}): {data['requests']} requests\n"
        f"  read:    {data['objects_read']} objects, {data['bytes_read']} bytes\n"
        f"  written: {data['objects_written']} objects, {data['bytes_written']} bytes\n"
        f"  first used {data['first_used_at']}, last used {data['last_used_at']}"
    )
    # The API also names the objects it moved most (the database path has only the counters).
    for key in data.get("top_keys") or []:
        moved = format_size(key["bytes_read"] + key["bytes_written"])
        click.echo(f"  {moved:>10}  {key['requests']:>5} requests  {key['target']}")


@audit.command("history")
@click.argument("resource")
@click.option("--since", default=None, help="ISO 8601 time, or a duration back from now (default 7d).")
@click.option("--until", default=None, help="ISO 8601 time, or a duration back from now (default now).")
@json_option
@click.pass_context
def audit_history(
    ctx: click.Context, resource: str, since: str | None, until: str | None, as_json: bool
) -> None:
    """Who had access to RESOURCE (s3://bucket/prefix, an object or a resource name) and when: each
    grant that covered it in the range, its span, who approved it and what it moved."""
    client = _api(ctx)
    if client is not None:
        data = _ask(client, "/access-history", resource=resource, since=since, until=until)
    else:
        data = _with_store_history(ctx, resource, since, until)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["grants"]:
        click.echo(f"nobody held a grant on {resource} from {data['since']} to {data['until']}")
        return
    rows = [
        [
            g["principal"],
            g["grant_id"],
            g["from"][:19].replace("T", " "),
            g["until"][:19].replace("T", " "),
            g["approved_by"] or g["source"],
            format_size(g["bytes_read"] + g["bytes_written"]),
            "" if g["covers"] == "whole" else "part",
        ]
        for g in data["grants"]
    ]
    click.echo(table(["PRINCIPAL", "GRANT", "FROM", "UNTIL", "APPROVED BY", "USED", ""], rows))
    if data["truncated"]:
        click.echo("(more grants on the bucket in this range than one answer holds: narrow the range)")


def _with_store_history(ctx: click.Context, resource: str, since: str | None, until: str | None) -> Any:
    """The API's answer, computed from the database (whoever holds it sees every grant)."""
    config = settings(ctx)
    try:
        start, end = history_range({"since": since or "", "until": until or ""}, datetime.now(UTC))
        area = area_of(config.policy.build(), resource)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    async def run(store: SqlStore) -> Any:
        found = await history(store, AuditStore(store), area, start, end, lambda _g: True)
        return history_json(resource, start, end, found)

    return with_store(config, run)


_RECEIPT_FIELDS = (
    "principal",
    "grant_id",
    "direction",
    "bucket",
    "key",
    "version_id",
    "etag",
    "size",
    "bytes",
    "complete",
    "first_at",
    "last_at",
)


def receipts_csv(receipts: list[dict[str, Any]]) -> str:
    """Receipts as CSV with a header row (the fields of the API contract, in its order)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_RECEIPT_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(receipts)
    return out.getvalue()


def _receipt_line(r: dict[str, Any]) -> list[str]:
    return [
        r["principal"] or "-",
        r["grant_id"] or "-",
        r["direction"],
        f"s3://{r['bucket']}/{r['key']}",
        r["version_id"] or "-",
        "-" if r["size"] is None else str(r["size"]),
        str(r["bytes"]),
        "complete" if r["complete"] else "partial",
        (r["last_at"] or "")[:19].replace("T", " "),
    ]


@audit.command("receipts")
@click.option("--principal", default=None, help="Only what this principal moved.")
@click.option("--grant", default=None, help="Only what moved under this grant id.")
@click.option("--since", default=None, help="ISO 8601 time, or a duration back from now (7d).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's answer).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@click.pass_context
def audit_receipts(
    ctx: click.Context,
    principal: str | None,
    grant: str | None,
    since: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Which exact objects and versions moved: one row per object version, bytes in all, complete or not."""
    if as_json and as_csv:
        raise click.UsageError("give one of --json and --csv")
    client = _api(ctx)
    if client is not None:
        found = _ask(client, "/audit/receipts", principal=principal, grant_id=grant, since=since)["receipts"]
    else:
        moment = parse_moment(since, datetime.now(UTC)) if since else None
        found = _with_audit(ctx, lambda a: a.receipts(principal=principal, grant_id=grant, since=moment))
    if as_json:
        click.echo(json.dumps({"receipts": found}, indent=2))
    elif as_csv:
        click.echo(receipts_csv(found), nl=False)
    elif not found:
        click.echo("no matching receipts")
    else:
        headers = ("PRINCIPAL", "GRANT", "DIR", "OBJECT", "VERSION", "SIZE", "BYTES", "STATE", "LAST (UTC)")
        click.echo(table(headers, [_receipt_line(r) for r in found]))


@audit.command("suspensions")
@click.option("--all", "show_all", is_flag=True, help="Include lifted suspensions.")
@click.pass_context
def audit_suspensions(ctx: click.Context, show_all: bool) -> None:
    """Grants suspended by an anomaly rule."""
    found = with_store(settings(ctx), lambda store: GrantSuspensions(store).list(active_only=not show_all))
    if not found:
        click.echo("no suspended grants")
    for s in found:
        state = f"lifted by {s.lifted_by} at {iso(s.lifted_at)}" if s.lifted_at else "suspended"
        click.echo(f"{s.grant_id}  {iso(s.suspended_at)}  {state}  {s.reason}")


@audit.command("resume")
@click.argument("grant_id")
@click.pass_context
def audit_resume(ctx: click.Context, grant_id: str) -> None:
    """Re-confirm a grant an anomaly rule suspended; gateways honour it again within a second."""
    lifted = with_store(
        settings(ctx),
        lambda store: GrantSuspensions(store).lift_suspension(grant_id, actor=actor(), now=datetime.now(UTC)),
    )
    if not lifted:
        raise click.ClickException(f"grant {grant_id} is not suspended")
    click.echo(f"re-confirmed {grant_id}")
