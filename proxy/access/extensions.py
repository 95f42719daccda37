"""Extending a grant (pure): which grants may be extended, and the span the policy's maximum is held to.

An extension is a request whose window starts where the grant ends: the grant is never shortened or
replaced, so access does not lapse while the extension waits, and an approval before the grant ends
leaves no gap. The policy's maximum counts the whole span, from when the (first) grant began to the new
end, so extending in small steps never adds up to more than one request could have asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from proxy.access.durations import format_duration
from proxy.access.grants import Grant
from proxy.access.policy import Rejected


@dataclass(frozen=True, slots=True)
class Extension:
    """What an extension of `grant` by `by` asks for: the window [starts_at, starts_at + by)."""

    grant: Grant
    by: timedelta
    starts_at: datetime  # where the grant ends
    span: timedelta  # from when access began to the new end: what the policy's maximum is held to


def plan(grant: Grant, by: timedelta, began: datetime, holder: str, now: datetime) -> Extension | Rejected:
    """`began`: when the grant (or the first grant of a chain of extensions) came into force."""
    if grant.principal != holder:
        return Rejected("not_yours", f"grant {grant.id} is not yours: only its holder may extend it")
    if grant.revoked_at is not None and grant.revoked_at <= now:
        return Rejected("grant_ended", f"grant {grant.id} was revoked; request access anew")
    if grant.expires_at is None:
        return Rejected("standing_grant", f"grant {grant.id} has no expiry: there is nothing to extend")
    if grant.expires_at <= now:
        return Rejected("grant_ended", f"grant {grant.id} has expired; request access anew")
    if by <= timedelta(0):
        return Rejected("invalid_duration", "the extension must be longer than zero")
    return Extension(grant, by, grant.expires_at, grant.expires_at + by - began)


def reworded(rejected: Rejected, extension: Extension, maximum: timedelta | None) -> Rejected:
    """The policy judged the whole span: say so, rather than quote a duration nobody typed."""
    if rejected.code != "duration_too_long" or maximum is None:
        return rejected
    return Rejected(
        "duration_too_long",
        f"grant {extension.grant.id} and {format_duration(extension.by)} more would last "
        f"{format_duration(extension.span)} in all, longer than the maximum of {format_duration(maximum)}; "
        "ask for less",
    )


def offered(grant: Grant) -> timedelta:
    """What a one-click extension (the expiry DM's button) asks for: as long again as the grant ran,
    to the minute, at least a minute; the policy still decides."""
    start = grant.starts_at or grant.created_at
    length = (grant.expires_at or start) - start
    return max(timedelta(minutes=int(length.total_seconds() // 60)), timedelta(minutes=1))
