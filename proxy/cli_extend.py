"""`grantgate extend GRANT --by 2h`: more time on a grant you hold, over the JSON API.

Registered on the main command group by proxy/cli.py.
"""

from __future__ import annotations

import urllib.parse

import click

from proxy.cli import _echo_json, main
from proxy.cli_access import _call, _outcome_line
from proxy.cli_base import json_option


@main.command("extend")
@click.argument("grant_id")
@click.option("--by", "by", required=True, help="How much longer, e.g. 2h, 1d (starts where the grant ends).")
@click.option("--justification", "-j", default="", help="Why you need it longer (the policy may require it).")
@json_option
@click.pass_context
def extend(ctx: click.Context, grant_id: str, by: str, justification: str, as_json: bool) -> None:
    """Ask to extend GRANT_ID: decided as a new request, and the grant stays in force while it waits."""
    path = f"/grants/{urllib.parse.quote(grant_id, safe='')}/extend"
    created = _call(ctx, "call", "POST", path, {"duration": by, "justification": justification})
    if as_json:
        _echo_json(created)
        return
    click.echo(_outcome_line(created))
