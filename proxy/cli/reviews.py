"""`grantgate reviews`: the periodic reviews of long-held access you hold or review, and a reviewer's
confirm or revoke, through the JSON API."""

from __future__ import annotations

import urllib.parse
from typing import Any

import click

from proxy.access.context import size_text
from proxy.cli import remote
from proxy.cli.common import echo_json, json_option, table


@click.group("reviews", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Include decided, missed and lapsed reviews.")
@json_option
@click.pass_context
def reviews(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Reviews of long-held access: list them, or `confirm` / `revoke` one."""
    if ctx.invoked_subcommand is not None:
        return
    found = remote.call(ctx, "call", "GET", "/reviews", status="all" if show_all else "open")["reviews"]
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("No reviews." if show_all else "No open reviews.")
        return
    click.echo(reviews_table(found))


def reviews_table(found: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["id"],
            r["principal"],
            r["resource"],
            "held since " + remote.when(r["period_start"]),
            remote.when(r["deadline"]),
            _use(r.get("usage") or {}),
            r["status"] + (" (you review)" if r.get("can_decide") else ""),
        ]
        for r in found
    ]
    return table(["ID", "HOLDER", "RESOURCE", "PERIOD", "DECIDE BY", "USE", "STATUS"], rows)


def _use(usage: dict[str, Any]) -> str:
    """The holder's use over the period under review."""
    if not usage.get("requests"):
        return "unused this period"
    last = remote.when(usage.get("last_used_at"))
    read = ("at least " if usage.get("partial") else "") + size_text(int(usage.get("bytes_read") or 0))
    return f"{read} read, {usage.get('objects_read', 0)} objects, last {last}"


def _decide(ctx: click.Context, review_id: str, decision: str, comment: str, as_json: bool) -> None:
    path = f"/reviews/{urllib.parse.quote(review_id, safe='')}"
    decided = remote.call(ctx, "call", "POST", path, {"decision": decision, "comment": comment})
    if as_json:
        echo_json(decided)
        return
    who, what = decided["principal"], decided["resource"]
    click.echo(f"Review {decided['id']}: {who}'s access to {what} is {decided['status']}.")


@reviews.command("confirm")
@click.argument("review_id")
@click.option("--comment", "-c", default="", help="Why it is still needed (audited).")
@json_option
@click.pass_context
def confirm(ctx: click.Context, review_id: str, comment: str, as_json: bool) -> None:
    """Confirm the access under review: it continues until the next review."""
    _decide(ctx, review_id, "confirm", comment, as_json)


@reviews.command("revoke")
@click.argument("review_id")
@click.option("--comment", "-c", default="", help="Why (audited, and told to the holder).")
@json_option
@click.pass_context
def revoke(ctx: click.Context, review_id: str, comment: str, as_json: bool) -> None:
    """Revoke the access under review now."""
    _decide(ctx, review_id, "revoke", comment, as_json)
