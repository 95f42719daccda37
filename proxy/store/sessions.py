"""Session cut-offs (a revoked grant stops its principal's older session tokens) and the ending of web
sessions, in the store.

Called inside the store's own transactions (sql.py), so the cut-off and the revocation that caused it
are committed, and seen by gateways, together.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.store.schema import session_cutoffs, web_sessions


async def cut_off_sessions(conn: AsyncConnection, principal: str, now: datetime) -> None:
    """Refuse `principal`'s sessions issued before `now`; a later cut-off already recorded is kept."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(session_cutoffs).values(principal=principal, not_before=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[session_cutoffs.c.principal],
        set_={"not_before": stmt.excluded.not_before},
        # Never move a cut-off back (a revocation stamped by a host whose clock is behind).
        where=session_cutoffs.c.not_before < stmt.excluded.not_before,
    )
    await conn.execute(stmt)


async def load_cutoffs(conn: AsyncConnection) -> Mapping[str, datetime]:
    rows = await conn.execute(select(session_cutoffs.c.principal, session_cutoffs.c.not_before))
    return MappingProxyType({row.principal: row.not_before for row in rows})


async def end_sessions_of(conn: AsyncConnection, principal: str, now: datetime) -> None:
    """End every open web session of `principal`."""
    await conn.execute(
        update(web_sessions)
        .where(web_sessions.c.principal == principal, web_sessions.c.ended_at.is_(None))
        .values(ended_at=now)
    )
