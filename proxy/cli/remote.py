"""Commands that talk to the JSON API: the client from the caller's token, one-line API errors, and the
tables of grants as the API returns them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from proxy.access.budgets import describe_json
from proxy.access.durations import format_remaining
from proxy.cli.common import UserError, settings, table
from proxy.client import ApiClient, ApiError, load_client_config
from proxy.config import ConfigError


def client(ctx: click.Context) -> ApiClient:
    """The API client; the server config's public_url is the fallback address when --config is given."""
    fallback = None
    if ctx.find_root().obj is not None:
        try:
            fallback = settings(ctx).server.public_url
        except ConfigError:
            fallback = None
    try:
        return ApiClient(load_client_config(fallback))
    except ApiError as exc:
        raise UserError(str(exc)) from None


def call(ctx: click.Context, method: str, *args: Any, **kwargs: Any) -> Any:
    """`ApiClient.<method>(...)`, its errors as one readable line."""
    api = client(ctx)
    try:
        return getattr(api, method)(*args, **kwargs)
    except ApiError as exc:
        raise UserError(str(exc)) from None


def when(value: str | None) -> str:
    """An API timestamp to the minute, for a table cell."""
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


def grants_table(grants: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            g["id"],
            g["principal"],
            g["resource"],
            ",".join(g["actions"]),
            _expires_in(g),
            g.get("source", ""),
            describe_json(g.get("budget"), g.get("usage")),
        ]
        for g in grants
    ]
    return table(["ID", "PRINCIPAL", "RESOURCE", "ACTIONS", "EXPIRES IN", "SOURCE", "BUDGET"], rows)
