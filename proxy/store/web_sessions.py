"""Web sessions in the store: opened at sign-in, checked on every page, ended at sign-out or when the
principal's access key is revoked (called inside that transaction, sql.py)."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import insert, select, update

from proxy.store.engine import require_aware, write_engine
from proxy.store.schema import web_sessions
from proxy.store.sql import SqlStore


class WebSessionStore:
    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    async def open(self, principal: str, via: str, *, now: datetime, expires: datetime) -> str:
        """A new session for `principal`; returns its id, for the cookie."""
        require_aware(now, expires)
        sid = secrets.token_urlsafe(32)
        async with self._writer.begin() as conn:
            await conn.execute(
                insert(web_sessions).values(
                    id=sid, principal=principal, via=via, created_at=now, expires_at=expires, ended_at=None
                )
            )
        return sid

    async def is_open(self, sid: str, principal: str, now: datetime) -> bool:
        if not sid:
            return False
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        web_sessions.c.principal, web_sessions.c.expires_at, web_sessions.c.ended_at
                    ).where(web_sessions.c.id == sid)
                )
            ).first()
        return (
            row is not None and row.principal == principal and row.ended_at is None and row.expires_at > now
        )

    async def end(self, sid: str, now: datetime) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(
                update(web_sessions)
                .where(web_sessions.c.id == sid, web_sessions.c.ended_at.is_(None))
                .values(ended_at=now)
            )
