"""What an approver needs to decide a request (pure): the requester's groups, how much lies under each
prefix asked for, the requester's past grants there and their use, and access they already hold.

The JSON built here is the one shape every surface shows: the API's `"context"`, the inbox, the Slack card
and `grantgate requests` all render it, the last three through `describe`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proxy.access.durations import iso
from proxy.access.grants import Grant
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.audit.records import Usage

PAST_GRANTS_SHOWN = 10  # the newest; older ones add little to a decision


@dataclass(frozen=True, slots=True)
class PrefixSize:
    """What a bounded listing of `s3://bucket/prefix` found; `complete` False means it stopped at its bound,
    so the counts are lower bounds ("more than")."""

    bucket: str
    prefix: str
    objects: int = 0
    bytes: int = 0
    complete: bool = True
    error: str = ""  # the listing failed: counts unknown


def shown_to(request: AccessRequest, viewer: str) -> bool:
    """Only to those deciding, while there is something to decide: the prefix's size is a fact about objects
    the requester cannot read yet, so filing a request must not reveal it to them."""
    return request.status is RequestStatus.PENDING and viewer != request.requester


def related(grant: Grant, bucket: str, prefix: str) -> bool:
    """The grant's scope and the asked-for prefix share keys: one prefix starts with the other."""
    return grant.bucket == bucket and (grant.prefix.startswith(prefix) or prefix.startswith(grant.prefix))


def _grant_json(grant: Grant, usage: Usage | None, now: datetime) -> dict[str, Any]:
    return {
        "grant_id": grant.id,
        "resource": grant.resource,
        "actions": sorted(a.value for a in grant.actions),
        "created_at": iso(grant.created_at),
        "expires_at": iso(grant.expires_at),
        "revoked_at": iso(grant.revoked_at),
        "active": grant.is_active(now) or grant.is_scheduled(now),
        "requests": usage.requests if usage else 0,
        "bytes_read": usage.bytes_read if usage else 0,
        "bytes_written": usage.bytes_written if usage else 0,
        "last_used_at": iso(usage.last_used_at) if usage else None,
    }


def _size_json(size: PrefixSize) -> dict[str, Any]:
    return {
        "resource": f"s3://{size.bucket}/{size.prefix}",
        "objects": size.objects,
        "bytes": size.bytes,
        "complete": size.complete,
        "error": size.error,
    }


def past_grants(request: AccessRequest, grants: Sequence[Grant]) -> list[Grant]:
    """The requester's grants touching any resource asked for, newest first (the request's own excluded)."""
    parts = request.parts()
    mine = [
        g
        for g in grants
        if g.principal == request.requester
        and g.request_id != request.id
        and any(related(g, p.bucket, p.prefix) for p in parts)
    ]
    return sorted(mine, key=lambda g: g.created_at, reverse=True)


def build(
    request: AccessRequest,
    groups: Sequence[str],
    past: Sequence[Grant],
    usage: Mapping[str, Usage],
    sizes: Sequence[PrefixSize],
    now: datetime,
) -> dict[str, Any]:
    """The context JSON; `past` from `past_grants`, `usage` by grant id."""
    overlapping = [
        g for g in past if (g.is_active(now) or g.is_scheduled(now)) and g.actions & request.actions
    ]
    return {
        "groups": sorted(groups),
        "prefixes": [_size_json(s) for s in sizes],
        "past_grants": [_grant_json(g, usage.get(g.id), now) for g in past[:PAST_GRANTS_SHOWN]],
        "past_grants_total": len(past),
        "overlapping": [_grant_json(g, usage.get(g.id), now) for g in overlapping],
    }


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable


def _prefix_line(p: Mapping[str, Any]) -> str:
    if p.get("error"):
        return f"Under {p['resource']}: size unknown ({p['error']})"
    more = "" if p["complete"] else "more than "
    n = p["objects"]
    return f"Under {p['resource']}: {more}{n} object{'' if n == 1 else 's'}, {more}{size_text(p['bytes'])}"


def _used(g: Mapping[str, Any]) -> str:
    if not g["last_used_at"]:
        return "never used"
    return (
        f"{size_text(g['bytes_read'])} read, {size_text(g['bytes_written'])} written, "
        f"last used {g['last_used_at']}"
    )


def describe(context: Mapping[str, Any]) -> list[str]:
    """One line per fact, for the CLI, the Slack card and the inbox."""
    lines = ["Groups: " + (", ".join(context["groups"]) or "none")]
    lines += [_prefix_line(p) for p in context["prefixes"]]
    past = context["past_grants"]
    if not past:
        lines.append("Past grants here: none")
    else:
        lines.append(f"Past grants here: {context['past_grants_total']}")
        lines += [f"  {g['grant_id']} {','.join(g['actions'])} {g['resource']}: {_used(g)}" for g in past]
    held = context["overlapping"]
    if not held:
        lines.append("Already holds: nothing overlapping")
    for g in held:
        until = g["expires_at"] or "no expiry"
        lines.append(
            f"Already holds: {','.join(g['actions'])} on {g['resource']} until {until} ({g['grant_id']})"
        )
    return lines
