"""The audit store: appends hash-chained audit records, queries and verifies them, keeps per-grant usage.

Grant suspensions, which write to the chain as well, are in proxy/store/suspensions.py.

Several gateway replicas may write to one database: each append locks the chain's head row (PostgreSQL
`SELECT ... FOR UPDATE`; SQLite's write transaction is exclusive already), numbers its records after
the head and moves the head, all in one transaction. So there is always exactly one chain, ordered by
`seq`, whoever wrote each link. Appends are batched by the audit writer, so the lock is taken about
once a second per gateway, not once per request.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Dialect, Row, Select, and_, case, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from proxy.audit.records import (
    COLUMNS,
    USAGE_COUNTERS,
    Anchor,
    AuditRecord,
    Break,
    ChainedRow,
    ChainVerifier,
    Usage,
    bodies_of,
    chain,
    fold_receipts,
    usage_from_records,
)
from proxy.store.engine import require_aware, write_engine
from proxy.store.schema import (
    audit_chain,
    audit_events,
    audit_grant_usage,
    audit_resource_readers,
)
from proxy.store.sql import SqlStore

HEAD = "head"
PAGE = 1000
# A review's use over its period folds at most this many records (then says the figures are a floor).
PERIOD_RECORDS = 200_000
# Rows per INSERT of an audit batch: bounds how long preparing one holds the event loop.
INSERT_SLICE = 64
# The record columns the driver takes as they are: every one but `at` (see `_driver_insert`).
_PLAIN_COLUMNS = tuple(name for name in COLUMNS if name != "at")
_plain_values = operator.itemgetter(*_PLAIN_COLUMNS)
# The order of an audit row's values for the driver: the table's, which `_driver_insert` checks.
_INSERTED = ("seq", "at", *_PLAIN_COLUMNS, "body", "prev_hash", "hash")


@dataclass(frozen=True, slots=True)
class AuditQuery:
    principal: str | None = None
    resource: str | None = None  # a resource name, or s3://bucket/prefix matched against the target
    grant_id: str | None = None
    decision: str | None = None
    kind: str | None = None  # exact kind, or a family ending in "." (e.g. "anomaly.")
    plane: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = 0
    limit: int | None = None
    latest: bool = False  # with `limit`: the most recent events (still returned oldest first)
    before_seq: int | None = None  # only events before this one (paging newest first)
    resources: tuple[str, ...] | None = None  # only events in one of these named resources
    action: str | None = None  # only S3 requests of this action (read, list, write, delete)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    body: dict[str, Any]
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.body, "hash": self.hash}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredEvent:
        """The inverse of as_dict (an event as the API returns it)."""
        body = {k: v for k, v in data.items() if k not in ("seq", "hash")}
        return cls(int(data["seq"]), body, str(data.get("hash", "")))


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    checked: int
    head_seq: int
    broken: Break | None

    def as_dict(self) -> dict[str, Any]:
        broken = None if self.broken is None else {"seq": self.broken.seq, "problem": self.broken.problem}
        return {"ok": self.ok, "checked": self.checked, "head_seq": self.head_seq, "first_broken": broken}


class AuditStore:
    """Audit queries and writes over the store's engine (no connection of its own)."""

    def __init__(self, store: SqlStore) -> None:
        # The store's engines: one pool per process, and the writer that takes SQLite's lock up front.
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    # --- the chain ---

    async def append(self, records: list[AuditRecord], usage: Iterable[Usage] = ()) -> int:
        """Append records after the chain head and add usage, in one transaction; returns the new head seq."""
        bodies = await bodies_of(records)  # before the transaction: it holds the chain head locked
        async with self._writer.begin() as conn:
            head = await append_in(conn, records, bodies)
            for item in usage:
                await _add_usage(conn, item)
        return head

    async def holds(self, body: str, *, after_seq: int) -> bool:
        """Whether the chain holds a record with exactly `body` after `after_seq`."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                select(audit_events.c.seq)
                .where(audit_events.c.seq > after_seq, audit_events.c.body == body)
                .limit(1)
            )
        return found is not None

    async def head(self) -> tuple[int, str]:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(audit_chain).where(audit_chain.c.name == HEAD))).one()
        return int(row.seq), row.hash

    async def verify(self, anchors: Iterable[Anchor] = ()) -> VerifyReport:
        """Check every link from the first event to the head, and that the chain still holds each of
        `anchors`; report the first that does not hold."""
        verifier = ChainVerifier(anchors={a.seq: a.hash for a in anchors})
        after = 0
        async with self._engine.connect() as conn:
            head = (await conn.execute(select(audit_chain).where(audit_chain.c.name == HEAD))).one()
            while verifier.broken is None:
                page = (
                    await conn.execute(
                        select(audit_events)
                        .where(audit_events.c.seq > after)
                        .order_by(audit_events.c.seq)
                        .limit(PAGE)
                    )
                ).all()
                for row in page:
                    if not verifier.feed(_chained(row)):
                        break
                if len(page) < PAGE:
                    break
                after = int(page[-1].seq)
        broken = verifier.finish(int(head.seq), head.hash)
        return VerifyReport(broken is None, verifier.checked, int(head.seq), broken)

    # --- queries ---

    async def query(self, q: AuditQuery) -> list[StoredEvent]:
        if not (q.latest and q.limit):
            return [event async for event in self.stream(q)]
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(audit_events.c.seq, audit_events.c.body, audit_events.c.hash)
                    .where(audit_events.c.seq > q.after_seq, *_filters(q))
                    .order_by(audit_events.c.seq.desc())
                    .limit(q.limit)
                )
            ).all()
        return [StoredEvent(int(r.seq), json.loads(r.body), r.hash) for r in reversed(rows)]

    async def stream(self, q: AuditQuery) -> AsyncIterator[StoredEvent]:
        """Matching events oldest first, read a page at a time (an export of millions stays small)."""
        after, left = q.after_seq, q.limit
        while left is None or left > 0:
            page_size = PAGE if left is None else min(PAGE, left)
            async with self._engine.connect() as conn:
                page = (
                    await conn.execute(
                        select(audit_events.c.seq, audit_events.c.body, audit_events.c.hash)
                        .where(audit_events.c.seq > after, *_filters(q))
                        .order_by(audit_events.c.seq)
                        .limit(page_size)
                    )
                ).all()
            for row in page:
                yield StoredEvent(int(row.seq), json.loads(row.body), row.hash)
            if len(page) < page_size:
                return
            after = int(page[-1].seq)
            if left is not None:
                left -= len(page)

    async def receipts(
        self, *, principal: str | None = None, grant_id: str | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Which objects and versions moved (see records.fold_receipts), from the chained records."""
        query = AuditQuery(principal=principal, grant_id=grant_id, since=since, kind="s3_request")
        return fold_receipts([event.body async for event in self.stream(query)])

    async def usage(self, grant_id: str) -> Usage | None:
        return (await self.usages([grant_id])).get(grant_id)

    async def usages(self, grant_ids: Iterable[str]) -> dict[str, Usage]:
        """What was done under each of these grants; a grant never used has no entry."""
        ids = sorted(set(grant_ids))
        found: dict[str, Usage] = {}
        async with self._engine.connect() as conn:
            # In slices: a page of grants stays one query, a long list stays under the drivers' bind limits.
            for start in range(0, len(ids), PAGE):
                rows = await conn.execute(
                    select(audit_grant_usage).where(
                        audit_grant_usage.c.grant_id.in_(ids[start : start + PAGE])
                    )
                )
                for row in rows:
                    found[row.grant_id] = Usage(
                        row.grant_id,
                        row.principal,
                        **{name: int(getattr(row, name)) for name in USAGE_COUNTERS},
                        first_used_at=row.first_used_at,
                        last_used_at=row.last_used_at,
                    )
        return found

    async def usages_since(
        self,
        grant_ids: Iterable[str],
        since: datetime,
        until: datetime | None = None,
        *,
        limit: int = PERIOD_RECORDS,
    ) -> tuple[dict[str, Usage], bool]:
        """What was done under each of these grants in [since, until), from the chained records (the
        usage table has totals only), and whether there were more than `limit` records to fold (the
        figures are then a floor)."""
        require_aware(since, until)
        ids = sorted(set(grant_ids))
        if not ids:
            return {}, False
        async with self._engine.connect() as conn:
            rows = (await conn.execute(period_records(ids, since, until, limit + 1))).all()
        return usage_from_records(json.loads(r.body) for r in rows[:limit]), len(rows) > limit

    async def newest(self, q: AuditQuery, limit: int) -> list[StoredEvent]:
        """The newest `limit` matches (before `q.before_seq`, if set), newest first: one page of the trail."""
        return list(reversed(await self.query(replace(q, latest=True, limit=limit))))

    # --- memory of the new-group-reader rule ---

    async def readers(self) -> set[tuple[str, str]]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(audit_resource_readers.c.resource, audit_resource_readers.c.group_name)
            )
            return {(r.resource, r.group_name) for r in rows}

    async def remember_readers(self, items: Iterable[tuple[str, str, str, datetime]]) -> None:
        """Record (resource, group, principal, first_at); pairs already known are left as they were."""
        values = [{"resource": r, "group_name": g, "principal": p, "first_at": at} for r, g, p, at in items]
        if not values:
            return
        async with self._writer.begin() as conn:
            dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = dialect_insert(audit_resource_readers).on_conflict_do_nothing(
                index_elements=["resource", "group_name"]
            )
            await conn.execute(stmt, values)


def period_records(grant_ids: list[str], since: datetime, until: datetime | None, limit: int) -> Select[Any]:
    """The usage-bearing records of these grants in [since, until): read off the (grant_id, at) index
    (migration 0019), so as many rows as the period holds, however long the grants have run."""
    c = audit_events.c
    window = [c.at >= since] if until is None else [c.at >= since, c.at < until]
    return (
        select(c.body)
        .where(c.grant_id.in_(grant_ids), *window, c.kind.in_(("s3_request", "grant_usage")))
        .limit(limit)
    )


def _filters(q: AuditQuery) -> list[ColumnElement[bool]]:
    c = audit_events.c
    found: list[ColumnElement[bool]] = []
    if q.principal:
        found.append(c.principal == q.principal)
    if q.resource:
        if q.resource.startswith("s3://"):
            found.append(c.target.startswith(q.resource, autoescape=True))
        else:
            found.append(c.resource == q.resource)
    if q.grant_id:
        found.append(c.grant_id == q.grant_id)
    if q.decision:
        found.append(c.decision == q.decision)
    if q.kind:
        found.append(c.kind.startswith(q.kind, autoescape=True) if q.kind.endswith(".") else c.kind == q.kind)
    if q.plane:
        found.append(c.plane == q.plane)
    if q.before_seq is not None:
        found.append(c.seq < q.before_seq)
    if q.resources is not None:
        found.append(c.resource.in_(q.resources))
    if q.action:
        # The action is a field of the stored body only; its canonical JSON spells it exactly so.
        found.append(c.kind == "s3_request")
        found.append(c.body.contains('"action":' + json.dumps(q.action), autoescape=True))
    if q.since:
        require_aware(q.since)
        found.append(c.at >= q.since)
    if q.until:
        require_aware(q.until)
        found.append(c.at < q.until)
    return found


async def append_in(
    conn: AsyncConnection, records: list[AuditRecord], bodies: list[str] | None = None
) -> int:
    """Chain records after the head in `conn`'s transaction, which holds the head locked until it ends;
    returns the new head."""
    head = (await conn.execute(select(audit_chain).where(audit_chain.c.name == HEAD).with_for_update())).one()
    seq, prev = int(head.seq), head.hash
    statement = _driver_insert(conn.dialect)
    # Chained and inserted a slice at a time: rows are hashed and their values prepared on the event
    # loop, and doing a whole batch at once held up every request in flight.
    for start in range(0, len(records), INSERT_SLICE):
        part = slice(start, start + INSERT_SLICE)
        rows = chain(records[part], seq, prev, bodies[part] if bodies is not None else None)
        await conn.exec_driver_sql(statement.sql, statement.values(rows))
        seq, prev = rows[-1].seq, rows[-1].hash
    if records:
        await conn.execute(update(audit_chain).where(audit_chain.c.name == HEAD).values(seq=seq, hash=prev))
    return seq


@dataclass(frozen=True, slots=True)
class _DriverInsert:
    """The INSERT of audit rows as one dialect's driver takes it: SQL rendered once, rows as tuples.

    `conn.execute(insert(audit_events), dicts)` spent a sixth to a fifth of an append's CPU in
    SQLAlchemy's per-row work (parameter dicts, each value through its type's processing) before the
    driver's executemany (bench/audit_append.py); this hands the driver the same statement and the same
    values directly.
    """

    sql: str
    bind_at: Callable[[Any], Any]  # what the `at` column's type (UtcDateTime) sends for a datetime

    def values(self, rows: list[ChainedRow]) -> list[tuple[Any, ...]]:
        """The rows' values in `_INSERTED` order, converted as SQLAlchemy would convert them."""
        try:
            return [self._row(row) for row in rows]
        except Exception as exc:
            # Raised as SQLAlchemy raises a value its type refuses (a naive `at`): the audit spool
            # tells a store error from others by it.
            raise StatementError(str(exc), self.sql, None, exc) from exc

    def _row(self, row: ChainedRow) -> tuple[Any, ...]:
        columns = row.columns
        at = self.bind_at(columns["at"])
        return (row.seq, at, *_plain_values(columns), row.body, row.prev_hash, row.hash)


@functools.lru_cache(maxsize=8)
def _driver_insert(dialect: Dialect) -> _DriverInsert:
    """Render the insert for `dialect` (cached per dialect object: each engine has its own).

    Checks what the tuples rely on: the statement binds `_INSERTED` in that order, and `at` is the only
    column whose type converts its value on the way to the driver (the others go as they are).
    """
    compiled = insert(audit_events).compile(dialect=dialect, column_keys=list(_INSERTED))
    if tuple(compiled.positiontup or ()) != _INSERTED:
        raise RuntimeError(f"audit insert binds {compiled.positiontup}, expected {_INSERTED}")
    processors = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in audit_events.columns}
    converted = {name for name, process in processors.items() if process is not None}
    bind_at = processors["at"]
    if converted != {"at"} or bind_at is None:
        raise RuntimeError(f"audit columns converted on binding: {sorted(converted)}, expected only 'at'")
    return _DriverInsert(compiled.string, bind_at)


def _chained(row: Row[Any]) -> ChainedRow:
    return ChainedRow(
        int(row.seq), {name: getattr(row, name) for name in COLUMNS}, row.body, row.prev_hash, row.hash
    )


async def _add_usage(conn: AsyncConnection, usage: Usage) -> None:
    t = audit_grant_usage
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(t).values(
        grant_id=usage.grant_id,
        principal=usage.principal,
        **{name: getattr(usage, name) for name in USAGE_COUNTERS},
        first_used_at=usage.first_used_at,
        last_used_at=usage.last_used_at,
    )
    new = stmt.excluded
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["grant_id"],
            set_={
                **{name: t.c[name] + new[name] for name in USAGE_COUNTERS},
                "first_used_at": case(
                    (t.c.first_used_at.is_(None), new.first_used_at),
                    (
                        and_(new.first_used_at.is_not(None), new.first_used_at < t.c.first_used_at),
                        new.first_used_at,
                    ),
                    else_=t.c.first_used_at,
                ),
                "last_used_at": case(
                    (t.c.last_used_at.is_(None), new.last_used_at),
                    (
                        and_(new.last_used_at.is_not(None), new.last_used_at > t.c.last_used_at),
                        new.last_used_at,
                    ),
                    else_=t.c.last_used_at,
                ),
            },
        )
    )
