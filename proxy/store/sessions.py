"""Session cut-offs in the store: when a principal's grant is revoked, its older session tokens stop working.

Called inside the store's own transactions (sql.py), so the cut-off and the revocation that caused it
are committed, and seen by gateways, together.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.store.schema import session_cutoffs


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
