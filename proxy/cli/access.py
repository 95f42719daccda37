"""`grantgate` commands over the JSON API with the caller's token: request access, approve, deny, cancel,
review, list requests, see your grants, revoke; `login` and `whoami`."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

import click

from proxy.access.context import describe
from proxy.access.terms import terms_sha256
from proxy.cli.common import UserError, echo_json, json_option, table
from proxy.cli.remote import call, client, grants_table, when
from proxy.client import ApiClient, ApiError, ClientConfig, save_client_config

# The API's refusals that carry the dataset terms to accept (proxy/workflow/errors.py).
TERMS_REFUSALS = ("terms_not_accepted", "terms_changed")


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
            when(r["created_at"]),
        ]
        for r in requests
    ]
    return table(
        ["ID", "STATUS", "REQUESTER", "RESOURCE", "ACTIONS", "FOR", "APPROVALS", "CREATED (UTC)"], rows
    )


def _describe_request(r: dict[str, Any]) -> str:
    lines = [
        f"Request {r['id']}: {r['status']}" + ("  [break-glass]" if r.get("break_glass") else ""),
        f"  requester:      {r['requester']}",
        f"  resource:       {r['resource']}  ({r['resource_name']})",
        *(f"                  {more}  (bundle: granted together)" for more in r.get("resources", [])[1:]),
        f"  actions:        {', '.join(r['actions'])} for {r['duration']}",
        f"  justification:  {r['justification'] or '-'}",
        f"  created:        {when(r['created_at'])} UTC",
    ]
    if r.get("ticket"):
        lines.append(f"  ticket:         {r['ticket']}")
    if r.get("starts_at"):
        lines.append(f"  starts:         {when(r['starts_at'])} UTC (scheduled)")
    if r["status"] == "pending":
        lines.append(f"  pending until:  {when(r['pending_until'])} UTC")
    if r["approvals_required"]:
        lines.append(f"  approvals:      {len(r['approvals'])} of {r['approvals_required']}")
    for a in r["approvals"]:
        comment = f": {a['comment']}" if a["comment"] else ""
        lines.append(f"    - {a['approver']} at {when(a['at'])}{comment}")
    if r.get("decided_by"):
        comment = f" ({r['decision_comment']})" if r.get("decision_comment") else ""
        lines.append(f"  decided:        by {r['decided_by']} at {when(r['decided_at'])}{comment}")
    if r.get("grant_id"):
        lines.append(f"  grant:          {', '.join(r.get('grant_ids') or [r['grant_id']])}")
    if r.get("needs_review"):
        lines.append("  review:         pending (break-glass access is reviewed after the fact)")
    elif r.get("reviewed_by"):
        lines.append(f"  reviewed:       by {r['reviewed_by']}: {r.get('review_comment') or '-'}")
    if r.get("context"):
        lines.append("  to decide:")
        lines += _context_lines(r["context"])
    return "\n".join(lines)


def _context_lines(context: dict[str, Any]) -> list[str]:
    return [f"    {line}" for line in describe(context)]


def _outcome_line(r: dict[str, Any]) -> str:
    grant = r.get("grant")
    if r["status"] == "approved" and grant:
        until = f"until {when(grant['expires_at'])} UTC" if grant.get("expires_at") else "with no expiry"
        if grant.get("starts_at"):
            until = f"from {when(grant['starts_at'])} UTC {until}"
        ids = r.get("grant_ids") or [grant["id"]]
        on = " and ".join(r.get("resources") or []) if len(ids) > 1 else grant["resource"]
        head = f"Granted: {', '.join(ids)} give{'s' if len(ids) == 1 else ''} {r['requester']} "
        head += f"{','.join(grant['actions'])} on {on} {until}."
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


@click.command("login")
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


@click.command("whoami")
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Who the API token belongs to, and what you may request and approve."""
    me = call(ctx, "whoami")
    if as_json:
        echo_json(me)
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
    click.echo(table(["RESOURCE", "PATHS", "ACTIONS", "MAX", "DECIDED BY"], rows))


@click.command("request")
@click.argument("resources", nargs=-1, required=True, metavar="RESOURCE...")
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
@click.option(
    "--accept-terms",
    "accept_terms",
    default="",
    metavar="SHA256",
    help="Accept the resource's dataset terms without a prompt: the SHA-256 of their text "
    "(`grantgate whoami --json` shows it as terms_sha256).",
)
@json_option
@click.pass_context
def request_access(
    ctx: click.Context,
    resources: tuple[str, ...],
    actions: str,
    duration: str | None,
    justification: str,
    break_glass: bool,
    ticket: str,
    starts_at: str | None,
    accept_terms: str,
    as_json: bool,
) -> None:
    """Ask for access to RESOURCE (s3://bucket/prefix, or a resource name such as `models`).

    Several resources (`grantgate request models evals`) are one bundle: each resource's rule must be
    satisfied, approvers see one request, and the grants are made together or not at all.
    A resource with dataset terms shows them and asks whether you accept them (or give --accept-terms)."""
    body: dict[str, Any] = {
        # One resource keeps the request's original shape; several are a bundle.
        **({"resource": resources[0]} if len(resources) == 1 else {"resources": list(resources)}),
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
    if accept_terms:
        body["accept_terms"] = accept_terms
    created = _create_accepting_terms(client(ctx), body, prompt=not accept_terms)
    if as_json:
        echo_json(created)
        return
    click.echo(_outcome_line(created))


def _create_accepting_terms(api: ApiClient, body: dict[str, Any], *, prompt: bool) -> dict[str, Any]:
    """Create the request; when the server answers with dataset terms to accept, show them and, if
    asked to prompt and the person agrees, ask again with the hash of exactly the text shown."""
    try:
        return api.create_request(body)
    except ApiError as exc:
        terms = exc.problem.get("terms")
        if exc.code not in TERMS_REFUSALS or not isinstance(terms, str):
            raise UserError(str(exc)) from None
        click.echo(
            f"Dataset terms of {exc.problem.get('resource')} (sha256 {exc.problem.get('terms_sha256')}):"
        )
        click.echo(
            click.wrap_text(terms, preserve_paragraphs=True, initial_indent="  ", subsequent_indent="  ")
        )
        if not prompt or not click.confirm("Do you accept these terms?", default=False):
            raise UserError(str(exc)) from None
    try:
        return api.create_request({**body, "accept_terms": terms_sha256(terms)})
    except ApiError as exc:
        raise UserError(str(exc)) from None


@click.command("requests")
@click.argument("request_id", required=False)
@click.option("--status", type=click.Choice(["pending", "approved", "denied", "cancelled", "expired"]))
@click.option("--inbox", is_flag=True, help="Only pending requests you may approve now.")
@click.option(
    "--pending",
    is_flag=True,
    help="Pending requests, each with what an approver needs to decide (groups, size, past use).",
)
@click.option("--requester", default=None, help="Only this requester's.")
@json_option
@click.pass_context
def requests_(
    ctx: click.Context,
    request_id: str | None,
    status: str | None,
    inbox: bool,
    pending: bool,
    requester: str | None,
    as_json: bool,
) -> None:
    """List the requests you can see (yours, those you approve), or show one REQUEST_ID."""
    if request_id:
        found = call(ctx, "get_request", request_id)
        if as_json:
            echo_json(found)
        else:
            click.echo(_describe_request(found))
        return
    if pending:
        status = "pending"
    listed = call(ctx, "list_requests", status=status, requester=requester, approvable=inbox or None)
    if pending:
        # The list leaves the context out (it lists the bucket); each request's own answer carries it.
        listed = [call(ctx, "get_request", r["id"]) for r in listed]
    if as_json:
        echo_json(listed)
        return
    if not listed:
        click.echo("nothing to approve" if inbox else "no requests")
        return
    click.echo(_requests_table(listed))
    for r in listed:
        if r.get("context"):
            click.echo(f"\n{r['id']}: {r['requester']} on {r['resource']}")
            click.echo("\n".join(_context_lines(r["context"])))


def _decide(ctx: click.Context, request_id: str, verb: str, body: dict[str, Any], as_json: bool) -> None:
    decided = call(ctx, "decide", request_id, verb, body)
    if as_json:
        echo_json(decided)
        return
    if verb == "approve":
        click.echo(_outcome_line(decided))
    else:
        click.echo(f"Request {decided['id']} is {decided['status']}.")


@click.command("approve")
@click.argument("request_id")
@click.option("--comment", "-c", default="", help="Shown to the requester and audited.")
@json_option
@click.pass_context
def approve(ctx: click.Context, request_id: str, comment: str, as_json: bool) -> None:
    """Approve a request (you must be in one of its approver groups, and not its requester)."""
    _decide(ctx, request_id, "approve", {"comment": comment}, as_json)


@click.command("deny")
@click.argument("request_id")
@click.option("--comment", "-c", default="", help="Why: shown to the requester and audited.")
@json_option
@click.pass_context
def deny(ctx: click.Context, request_id: str, comment: str, as_json: bool) -> None:
    """Deny a pending request."""
    _decide(ctx, request_id, "deny", {"comment": comment}, as_json)


@click.command("cancel")
@click.argument("request_id")
@click.option("--reason", default="", help="Why, for the audit trail.")
@json_option
@click.pass_context
def cancel(ctx: click.Context, request_id: str, reason: str, as_json: bool) -> None:
    """Cancel your own pending request."""
    _decide(ctx, request_id, "cancel", {"reason": reason}, as_json)


@click.command("review")
@click.argument("request_id")
@click.option("--comment", "-c", required=True, help="What you checked.")
@json_option
@click.pass_context
def review(ctx: click.Context, request_id: str, comment: str, as_json: bool) -> None:
    """Review a break-glass request after the fact."""
    _decide(ctx, request_id, "review", {"comment": comment}, as_json)


@click.command("revoke")
@click.argument("grant_id")
@click.option("--reason", default="", help="Why, for the audit trail.")
@json_option
@click.pass_context
def revoke(ctx: click.Context, grant_id: str, reason: str, as_json: bool) -> None:
    """End a grant now (yours, one on a resource you approve, or any as an admin)."""
    grant = call(ctx, "revoke_grant", grant_id, reason)
    if as_json:
        echo_json(grant)
        return
    click.echo(
        f"revoked {grant['id']}: {grant['principal']} {','.join(grant['actions'])} on {grant['resource']}"
    )


@click.command("extend")
@click.argument("grant_id")
@click.option("--by", "by", required=True, help="How much longer, e.g. 2h, 1d (starts where the grant ends).")
@click.option("--justification", "-j", default="", help="Why you need it longer (the policy may require it).")
@json_option
@click.pass_context
def extend(ctx: click.Context, grant_id: str, by: str, justification: str, as_json: bool) -> None:
    """Ask to extend GRANT_ID: decided as a new request, and the grant stays in force while it waits."""
    path = f"/grants/{urllib.parse.quote(grant_id, safe='')}/extend"
    created = call(ctx, "call", "POST", path, {"duration": by, "justification": justification})
    if as_json:
        echo_json(created)
        return
    click.echo(_outcome_line(created))


@click.command("mine")
@click.option("--all", "show_all", is_flag=True, help="Include ended grants and decided requests.")
@json_option
@click.pass_context
def mine(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Your grants and your open requests."""
    me = call(ctx, "whoami")["principal"]
    grants = call(ctx, "list_grants", principal=me, active=None if show_all else True)
    requests = call(ctx, "list_requests", requester=me, status=None if show_all else "pending")
    if as_json:
        echo_json({"principal": me, "grants": grants, "requests": requests})
        return
    click.echo(f"Grants of {me}:")
    click.echo(_indent(grants_table(grants)) if grants else "  none")
    click.echo("Requests:" if show_all else "Pending requests:")
    click.echo(_indent(_requests_table(requests)) if requests else "  none")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
