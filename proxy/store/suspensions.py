"""Grant suspensions: grants an anomaly rule took out of service until an approver re-confirms them.

Every change bumps the store version (gateways reload the grant) and appends its record to the audit
chain in the same transaction, so the trail never misses a suspension that took effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.audit.records import AuditRecord
from proxy.audit.store import append_in
from proxy.store.engine import require_aware, write_engine
from proxy.store.schema import grant_suspensions, grants
from proxy.store.sql import SqlStore, bump_version, grant_active


@dataclass(frozen=True, slots=True)
class Suspension:
    grant_id: str
    suspended_at: datetime
    reason: str
    lifted_at: datetime | None
    lifted_by: str


class GrantSuspensions:
    """Suspensions over the store's engine (no connection of its own)."""

    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    async def suspend_grant(self, grant_id: str, *, reason: str, now: datetime) -> bool:
        """Suspend a grant; False if it is suspended already."""
        require_aware(now)
        async with self._writer.begin() as conn:
            return bool(await _suspend_in(conn, [grant_id], reason, now))

    async def suspend_principal(self, principal: str, *, reason: str, now: datetime) -> list[str]:
        """Suspend every grant in force of `principal` in one transaction (one version bump: every
        gateway drops them together); the ids suspended."""
        require_aware(now)
        async with self._writer.begin() as conn:
            query = select(grants.c.id).where(grants.c.principal == principal, grant_active(now))
            ids = list((await conn.execute(query)).scalars())
            return await _suspend_in(conn, ids, reason, now)

    async def lift_suspension(self, grant_id: str, *, actor: str, now: datetime) -> bool:
        """Re-confirm a suspended grant; False if it was not suspended."""
        require_aware(now)
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(grant_suspensions)
                .where(grant_suspensions.c.grant_id == grant_id, grant_suspensions.c.lifted_at.is_(None))
                .values(lifted_at=now, lifted_by=actor)
            )
            if not result.rowcount:
                return False
            await bump_version(conn, [grant_id])
            await append_in(conn, [_record("grant_reconfirmed", grant_id, actor, "", now)])
        return True

    async def held_since(self, principal: str) -> datetime | None:
        """When `principal`'s oldest suspension still in force began (None: not held). A hold outlives
        the grant it was put on (expired or revoked since): only re-confirming the suspension ends it."""
        query = (
            select(func.min(grant_suspensions.c.suspended_at))
            .select_from(grant_suspensions.join(grants, grants.c.id == grant_suspensions.c.grant_id))
            .where(grants.c.principal == principal, grant_suspensions.c.lifted_at.is_(None))
        )
        async with self._engine.connect() as conn:
            found: datetime | None = (await conn.execute(query)).scalar()
        return found

    async def list(self, *, active_only: bool = True) -> list[Suspension]:
        query = select(grant_suspensions).order_by(grant_suspensions.c.suspended_at)
        if active_only:
            query = query.where(grant_suspensions.c.lifted_at.is_(None))
        async with self._engine.connect() as conn:
            return [
                Suspension(r.grant_id, r.suspended_at, r.reason, r.lifted_at, r.lifted_by)
                for r in await conn.execute(query)
            ]


async def _suspend_in(conn: AsyncConnection, grant_ids: list[str], reason: str, now: datetime) -> list[str]:
    """Suspend those of `grant_ids` not suspended already, bump the version once and audit each."""
    suspended = []
    values = {"suspended_at": now, "reason": reason, "lifted_at": None, "lifted_by": ""}
    for grant_id in grant_ids:
        row = (
            await conn.execute(
                select(grant_suspensions).where(grant_suspensions.c.grant_id == grant_id).with_for_update()
            )
        ).first()
        if row is not None and row.lifted_at is None:
            continue
        if row is None:
            await conn.execute(insert(grant_suspensions).values(grant_id=grant_id, **values))
        else:
            await conn.execute(
                update(grant_suspensions).where(grant_suspensions.c.grant_id == grant_id).values(**values)
            )
        suspended.append(grant_id)
    if suspended:
        await bump_version(conn, suspended)
        await append_in(conn, [_record("grant_suspended", g, "system", reason, now) for g in suspended])
    return suspended


def _record(kind: str, grant_id: str, actor: str, reason: str, now: datetime) -> AuditRecord:
    return AuditRecord(
        kind=kind,
        plane="control",
        at=now,
        principal=actor,
        grant_id=grant_id,
        event={"grant_id": grant_id, "actor": actor, "reason": reason},
    )
