"""Grants by bucket and time: every grant that was in force on a bucket at some moment of a range."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select

from proxy.access.grants import Grant
from proxy.store.engine import require_aware
from proxy.store.schema import grants
from proxy.store.sql import SqlStore, grant_of_row


async def grants_in_range(
    store: SqlStore, bucket: str, since: datetime, until: datetime, *, limit: int
) -> list[Grant]:
    """Grants on `bucket` in force at some moment of [since, until), oldest first, at most `limit`
    (by ix_grants_bucket: a bucket's grants, never the whole table)."""
    require_aware(since)
    require_aware(until)
    c = grants.c
    query = (
        select(grants)
        .where(
            c.bucket == bucket,
            c.created_at < until,
            or_(c.starts_at.is_(None), c.starts_at < until),
            or_(c.expires_at.is_(None), c.expires_at > since),
            or_(c.revoked_at.is_(None), c.revoked_at > since),
        )
        .order_by(c.created_at, c.id)
        .limit(limit)
    )
    async with store.engine.connect() as conn:
        return [grant_of_row(row) for row in await conn.execute(query)]
