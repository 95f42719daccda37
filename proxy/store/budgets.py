"""The budget ledger: what each budgeted grant has served, drawn on by every gateway in the store.

A transfer under a budgeted grant opens a read (one transaction: the object counted, a single-use range
claimed, a first slice of bytes reserved), draws further slices as it streams, and settles at its end
(bytes reserved but not sent given back; a single-use range that was cut released past what was sent).
Each draw locks the grant's usage row, so concurrent transfers on any worker or replica are counted one
after the other and the bytes served never pass `max_bytes`.

Why a slice of 8 MiB: it is the aws cli's and s5cmd's range size, so a typical ranged read costs one
round trip to the store (plus its settlement), and a large object one per 8 MiB (well under 1 % of the
time it takes to move them). A gateway that dies mid-transfer leaves at most one slice per transfer
reserved and never settled: usage can read high by that much, never low (fail closed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.access.budgets import Budget, Span, Usage, merged, overlaps, without
from proxy.access.grants import Grant
from proxy.store.engine import insert_ignoring_conflict, require_aware, write_engine
from proxy.store.schema import grant_objects, grant_usage, grants
from proxy.store.sql import SqlStore, bump_version

SLICE = 8 * 1024 * 1024

# Why a read was refused.
SPENT = "bytes"  # the byte budget is used up
OBJECTS = "objects"  # a new object past max_objects
READ_ONCE = "single_use"  # these bytes of this object were served already under a single-use grant


@dataclass(frozen=True, slots=True)
class Claim:
    """A read opened on a budgeted grant: the bytes reserved so far and the span it claimed."""

    grant_id: str
    object: str
    span: Span
    reserved: int


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # SPENT | OBJECTS | READ_ONCE
    usage: Usage
    became_spent: bool = False  # this refusal marked the grant spent (announce it once)


@dataclass(frozen=True, slots=True)
class Settled:
    usage: Usage
    became_spent: bool


def object_id(bucket: str, key: str) -> str:
    return hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()


class BudgetLedger:
    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    async def open_read(
        self, grant: Grant, bucket: str, key: str, span: Span, now: datetime
    ) -> Claim | Refused:
        """Count the object, claim `span` (single-use), and reserve the first slice of its bytes."""
        require_aware(now)
        budget = grant.budget or Budget()
        oid = object_id(bucket, key)
        async with self._writer.begin() as conn:
            used = await _lock_usage(conn, grant.id)
            row = (
                await conn.execute(
                    select(grant_objects.c.ranges).where(
                        grant_objects.c.grant_id == grant.id, grant_objects.c.object == oid
                    )
                )
            ).first()
            new = row is None
            if new and budget.max_objects is not None and used.objects >= budget.max_objects:
                return Refused(OBJECTS, used)
            served: list[Span] = [] if row is None else [(int(s), int(e)) for s, e in row.ranges]
            if budget.single_use and overlaps(served, span):
                return Refused(READ_ONCE, used)
            reserved = _available(budget, used, min(span[1] - span[0], SLICE))
            if reserved == 0 and span[1] > span[0]:
                return Refused(SPENT, used, await _mark_spent(conn, grant.id, now))
            used = Usage(used.bytes + reserved, used.objects + int(new))
            await _write_usage(conn, grant.id, used)
            ranges = [list(s) for s in merged([*served, span])] if budget.single_use else []
            if new:
                await conn.execute(
                    grant_objects.insert().values(grant_id=grant.id, object=oid, ranges=ranges, first_at=now)
                )
            elif budget.single_use:
                await _write_ranges(conn, grant.id, oid, ranges)
        return Claim(grant.id, oid, span, reserved)

    async def reserve(self, grant: Grant, wanted: int) -> int:
        """Up to `wanted` more bytes for a transfer in flight; fewer (or none) when the budget runs out."""
        async with self._writer.begin() as conn:
            used = await _lock_usage(conn, grant.id)
            got = _available(grant.budget or Budget(), used, wanted)
            if got:
                await _write_usage(conn, grant.id, Usage(used.bytes + got, used.objects))
        return got

    async def settle(self, grant: Grant, claim: Claim, reserved: int, sent: int, now: datetime) -> Settled:
        """A transfer ended having sent `sent` of the `reserved` bytes: give the rest back, release the
        part of a single-use span that was never sent, and mark the grant spent if its bytes are gone."""
        require_aware(now)
        budget = grant.budget or Budget()
        async with self._writer.begin() as conn:
            used = await _lock_usage(conn, grant.id)
            used = Usage(max(used.bytes - (reserved - sent), 0), used.objects)
            await _write_usage(conn, grant.id, used)
            start, end = claim.span
            if budget.single_use and start + sent < end:
                row = (
                    await conn.execute(
                        select(grant_objects.c.ranges).where(
                            grant_objects.c.grant_id == grant.id, grant_objects.c.object == claim.object
                        )
                    )
                ).first()
                if row is not None:
                    kept = without([(int(s), int(e)) for s, e in row.ranges], (start + sent, end))
                    await _write_ranges(conn, grant.id, claim.object, [list(s) for s in kept])
            spent = budget.max_bytes is not None and used.bytes >= budget.max_bytes
            became = await _mark_spent(conn, grant.id, now) if spent else False
        return Settled(used, became)

    async def usage(self, grant_ids: Iterable[str]) -> dict[str, Usage]:
        """What each of these grants has moved (grants never drawn on are absent)."""
        ids = sorted(set(grant_ids))
        if not ids:
            return {}
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(grant_usage).where(grant_usage.c.grant_id.in_(ids)))
            return {row.grant_id: Usage(int(row.bytes), int(row.objects)) for row in rows}


def _available(budget: Budget, used: Usage, wanted: int) -> int:
    if budget.max_bytes is None:
        return wanted
    return max(0, min(wanted, budget.max_bytes - used.bytes))


async def _lock_usage(conn: AsyncConnection, grant_id: str) -> Usage:
    await conn.execute(
        insert_ignoring_conflict(conn, grant_usage, "grant_id").values(grant_id=grant_id, bytes=0, objects=0)
    )
    row = (
        await conn.execute(select(grant_usage).where(grant_usage.c.grant_id == grant_id).with_for_update())
    ).one()
    return Usage(int(row.bytes), int(row.objects))


async def _write_usage(conn: AsyncConnection, grant_id: str, used: Usage) -> None:
    await conn.execute(
        update(grant_usage)
        .where(grant_usage.c.grant_id == grant_id)
        .values(bytes=used.bytes, objects=used.objects)
    )


async def _write_ranges(conn: AsyncConnection, grant_id: str, oid: str, ranges: list[Any]) -> None:
    await conn.execute(
        update(grant_objects)
        .where(grant_objects.c.grant_id == grant_id, grant_objects.c.object == oid)
        .values(ranges=ranges)
    )


async def _mark_spent(conn: AsyncConnection, grant_id: str, now: datetime) -> bool:
    """Stamp the grant spent (once): every gateway reloads it and refuses its reads at admission."""
    result = await conn.execute(
        update(grants).where(grants.c.id == grant_id, grants.c.spent_at.is_(None)).values(spent_at=now)
    )
    if result.rowcount:
        await bump_version(conn, [grant_id])
        return True
    return False
