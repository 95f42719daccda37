"""What the approvers' pages and their JSON twins read from the audit store and the grants (the I/O around
proxy/access/coverage.py and proxy/audit/keyuse.py): a grant's use, bytes per grant, who had access when,
and which part of the trail a viewer may read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from aiohttp import web

from proxy.access import coverage
from proxy.access.grants import Grant, parse_resource
from proxy.access.policy import Policy, may_view_grant
from proxy.audit.keyuse import KeyUse, top_keys
from proxy.audit.records import Usage, parse_moment
from proxy.audit.store import AuditQuery, AuditStore, StoredEvent
from proxy.identity.principals import Principal
from proxy.store.history import grants_in_range
from proxy.store.sql import SqlStore
from proxy.workflow.service import Workflow

# A grant's page folds at most its newest this many requests into per-key totals (and says so).
KEYS_SCANNED = 2000
TOP_KEYS = 10
# A trail page whose filters no index serves searches at most this many events back, then offers to go on.
SCAN_WINDOW = 100_000
# Who-had-access answers with at most this many grants of the bucket (and says when there were more).
HISTORY_GRANTS = 500
HISTORY_DEFAULT = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class GrantUse:
    usage: Usage
    keys: list[KeyUse]
    scanned: int  # requests folded into `keys`
    partial: bool  # the grant made more requests than were folded


@dataclass(frozen=True, slots=True)
class TrailPage:
    events: list[StoredEvent]  # newest first
    older: int | None  # `before` for the next page; None: nothing older matches
    searched_from: int | None  # the oldest seq this page searched, when a window bounded it


def indexed(q: AuditQuery) -> bool:
    """Whether an index narrows the query to its matches, so a page reads only about as many rows as
    it shows: principal, grant and resource names are indexed with seq; an action, outcome, s3://
    prefix or time range alone is checked row by row."""
    named = q.resource is not None and not q.resource.startswith("s3://")
    return bool(q.principal or q.grant_id or named or q.resources is not None)


def window(q: AuditQuery, head: int) -> AuditQuery:
    """The query confined to the SCAN_WINDOW events below its cursor, unless an index serves it."""
    if indexed(q):
        return q
    top = head + 1 if q.before_seq is None else q.before_seq
    return replace(q, after_seq=max(q.after_seq, top - 1 - SCAN_WINDOW))


async def trail_page(audit: AuditStore, q: AuditQuery, size: int) -> TrailPage:
    """One page of the trail, newest first, never reading more than a window of unindexed rows."""
    bounded = window(q, (await audit.head())[0])
    events = await audit.newest(bounded, size)
    if len(events) == size:
        return TrailPage(events, events[-1].seq, None)
    floor = bounded.after_seq
    if floor > q.after_seq:  # the window ended the search, not the trail
        return TrailPage(events, floor + 1, floor + 1)
    return TrailPage(events, None, None)


@dataclass(frozen=True, slots=True)
class History:
    spans: list[coverage.Span]
    usage: dict[str, Usage]
    truncated: bool  # the bucket had more grants in the range than were read


@dataclass(frozen=True, slots=True)
class Area:
    """What who-had-access was asked about: s3:// areas, by path or by a resource's name (all its paths)."""

    asked: str
    paths: tuple[tuple[str, str], ...]  # (bucket, prefix); an object's key is a prefix of itself


def area_of(policy: Policy, asked: str) -> Area:
    """ValueError with a readable message when it names nothing."""
    text = asked.strip()
    if text.startswith("s3://"):
        return Area(text, (parse_resource(text),))
    named = policy.resource(text)
    if named is None:
        raise ValueError(f"there is no resource named {text!r}: give s3://bucket/prefix or a resource name")
    return Area(text, tuple((p.bucket, p.prefix) for p in named.paths))


def history_range(params: Mapping[str, str], now: datetime) -> tuple[datetime, datetime]:
    """`since` and `until` (ISO 8601 or a duration back from now), by default the last week."""
    since_text, until_text = params.get("since") or "", params.get("until") or ""
    since = parse_moment(since_text, now) if since_text else now - HISTORY_DEFAULT
    until = parse_moment(until_text, now) if until_text else now
    if since >= until:
        raise ValueError("the range is empty: 'since' must come before 'until'")
    return since, until


class Trail:
    def __init__(self, workflow: Workflow, audit: AuditStore, reader_groups: Iterable[str]) -> None:
        self.workflow = workflow
        self.audit = audit
        self.reader_groups = frozenset(reader_groups)

    def scope(self, viewer: Principal) -> tuple[str, ...] | None:
        """The resources whose trail `viewer` may read: None for all of it (admins and `[audit]
        reader_groups`), else those they approve (none: not theirs to read)."""
        policy = self.workflow.policy
        if policy.is_admin(viewer) or not self.reader_groups.isdisjoint(viewer.groups):
            return None
        return tuple(r.name for r in policy.resources if policy.is_approver_of(viewer, r.name))

    async def page(self, q: AuditQuery, size: int) -> TrailPage:
        return await trail_page(self.audit, q, size)

    async def usages(self, grants: Iterable[Grant]) -> dict[str, Usage]:
        """Every grant's use so far (never used: zeros)."""
        ids = [g.id for g in grants]
        found = await self.audit.usages(ids)
        return {gid: found.get(gid) or Usage(gid, None) for gid in ids}

    async def grant_use(self, grant: Grant) -> GrantUse:
        usage = (await self.usages([grant]))[grant.id]
        recent = await self.audit.newest(AuditQuery(grant_id=grant.id, kind="s3_request"), KEYS_SCANNED)
        keys = top_keys((e.body for e in recent), TOP_KEYS)
        return GrantUse(usage, keys, len(recent), usage.requests > len(recent))

    async def history_of(self, viewer: Principal, area: Area, since: datetime, until: datetime) -> History:
        """Who had access to the area in [since, until), among the grants `viewer` may see: trail
        readers every grant (as they see every event), approvers those on what they approve."""
        everything = self.scope(viewer) is None
        policy = self.workflow.policy
        return await history(
            self.workflow.store,
            self.audit,
            area,
            since,
            until,
            lambda g: everything or may_view_grant(policy, g, viewer),
        )


async def history(
    store: SqlStore,
    audit: AuditStore,
    area: Area,
    since: datetime,
    until: datetime,
    visible: Callable[[Grant], bool],
) -> History:
    """Each `visible` grant over each of the area's paths in [since, until), counted once (at its
    earliest span), with what it moved."""
    spans: list[coverage.Span] = []
    truncated = False
    for bucket, prefix in area.paths:
        found = await grants_in_range(store, bucket, since, until, limit=HISTORY_GRANTS + 1)
        truncated = truncated or len(found) > HISTORY_GRANTS
        seen = {s.grant.id for s in spans}
        shown = [g for g in found[:HISTORY_GRANTS] if g.id not in seen and visible(g)]
        spans.extend(coverage.coverage(shown, bucket, prefix, since, until))
    spans.sort(key=lambda s: (s.start, s.principal, s.grant.id))
    found_usage = await audit.usages(s.grant.id for s in spans)
    usage = {s.grant.id: found_usage.get(s.grant.id) or Usage(s.grant.id, None) for s in spans}
    return History(spans, usage, truncated)


TRAIL = web.AppKey("trail", Trail)
