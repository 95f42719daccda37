"""Whole-model pulls across replicas: the shard byte ranges each gateway flushed, and the claim by which one
replica, and only one, raises an alert about them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import and_, delete, insert, or_, select, update

from proxy.observe.models import ShardRead
from proxy.store.engine import insert_ignoring_conflict, require_aware, write_engine
from proxy.store.schema import access_requests, anomaly_claims, grants, model_reads
from proxy.store.sql import SqlStore


class ModelReads:
    """Over the store's engine (no connection of its own)."""

    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    async def record(self, reads: Sequence[ShardRead], now: datetime) -> None:
        require_aware(now)
        if not reads:
            return
        rows = [
            {
                "principal": r.principal,
                "model": r.model,
                "shard": r.shard,
                "first_byte": r.start,
                "end_byte": r.end,
                "grant_ids": list(r.grant_ids),
                "read_at": now,
            }
            for r in reads
        ]
        async with self._writer.begin() as conn:
            await conn.execute(insert(model_reads), rows)

    async def read_since(self, since: Mapping[str, datetime]) -> list[ShardRead]:
        """Every range each principal read of any model flushed after its moment in `since`, by every
        replica: one query for them all."""
        require_aware(*since.values())
        if not since:
            return []
        query = select(model_reads).where(
            or_(
                *(
                    and_(model_reads.c.principal == principal, model_reads.c.read_at > moment)
                    for principal, moment in since.items()
                )
            )
        )
        async with self._engine.connect() as conn:
            return [
                ShardRead(
                    r.principal,
                    r.model,
                    r.shard,
                    r.first_byte,
                    r.end_byte,
                    tuple(r.grant_ids),
                    r.read_at.timestamp(),
                )
                for r in await conn.execute(query)
            ]

    async def prune(self, before: datetime) -> None:
        require_aware(before)
        async with self._writer.begin() as conn:
            await conn.execute(delete(model_reads).where(model_reads.c.read_at <= before))

    async def claim(self, kind: str, subject: str, now: datetime, window_start: datetime) -> bool:
        """Whether this caller raises the alert about `subject`: nobody did, or only before
        `window_start` (an earlier pull's alert). Atomic across replicas: one of them wins."""
        require_aware(now, window_start)
        async with self._writer.begin() as conn:
            inserted = await conn.execute(
                insert_ignoring_conflict(conn, anomaly_claims, "kind", "subject").values(
                    kind=kind, subject=subject, fired_at=now
                )
            )
            if inserted.rowcount:
                return True
            taken = await conn.execute(
                update(anomaly_claims)
                .where(
                    anomaly_claims.c.kind == kind,
                    anomaly_claims.c.subject == subject,
                    anomaly_claims.c.fired_at <= window_start,
                )
                .values(fired_at=now)
            )
            return bool(taken.rowcount)

    async def justifications(self, grant_ids: Iterable[str]) -> dict[str, str]:
        """The justification each grant was granted on (its request's); "" for a grant made without one
        (by an admin or the CLI)."""
        wanted = list(dict.fromkeys(grant_ids))
        query = (
            select(grants.c.id, access_requests.c.justification)
            .select_from(grants.outerjoin(access_requests, access_requests.c.id == grants.c.request_id))
            .where(grants.c.id.in_(wanted))
        )
        async with self._engine.connect() as conn:
            found = {row.id: row.justification or "" for row in await conn.execute(query)}
        return {g: found.get(g, "") for g in wanted}
