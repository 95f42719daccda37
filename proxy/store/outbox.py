"""Webhook deliveries not yet done, kept in the store so that a restart or a crash does not lose them.

A gateway process holds each row it has queued or is waiting to retry through a lease it keeps renewing.
When its process stops, it lets go of them; when it dies, their leases run out. Either way the next
sweep of any gateway claims them, so a delivery is attempted by one process at a time and outlives the
process that queued it. A receiver may still see a delivery twice (a process that died after sending
but before recording it); its X-GrantGate-Delivery id says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update

from proxy.store.engine import write_engine
from proxy.store.schema import webhook_deliveries as rows
from proxy.store.sql import SqlStore

# Ids per UPDATE when renewing or letting go of leases.
_ID_SLICE = 500


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    id: str
    hook: str  # the hook's fingerprint (see proxy/notify/webhooks.py)
    event: str
    event_id: str
    body: bytes
    attempt: int
    due_at: datetime


class WebhookOutbox:
    def __init__(self, store: SqlStore) -> None:
        self._writer = write_engine(store.engine)

    async def add(
        self, deliveries: Iterable[StoredDelivery], *, now: datetime, lease_until: datetime
    ) -> None:
        values = [
            {
                "id": d.id,
                "hook": d.hook,
                "event": d.event,
                "event_id": d.event_id,
                "body": d.body.decode(),
                "attempt": d.attempt,
                "due_at": d.due_at,
                "lease_until": lease_until,
                "created_at": now,
            }
            for d in deliveries
        ]
        if values:
            async with self._writer.begin() as conn:
                await conn.execute(rows.insert(), values)

    async def reschedule(self, delivery_id: str, attempt: int, due_at: datetime) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(
                update(rows).where(rows.c.id == delivery_id).values(attempt=attempt, due_at=due_at)
            )

    async def done(self, delivery_id: str) -> None:
        """Delivered, or given up on: nobody will send it again."""
        async with self._writer.begin() as conn:
            await conn.execute(delete(rows).where(rows.c.id == delivery_id))

    async def hold(self, delivery_ids: Iterable[str], lease_until: datetime) -> None:
        """Renew the leases on rows this process still holds; with `lease_until` now, let go of them."""
        ids = list(delivery_ids)
        async with self._writer.begin() as conn:
            for start in range(0, len(ids), _ID_SLICE):
                batch = ids[start : start + _ID_SLICE]
                await conn.execute(update(rows).where(rows.c.id.in_(batch)).values(lease_until=lease_until))

    async def claim(self, *, now: datetime, lease_until: datetime, limit: int = 100) -> list[StoredDelivery]:
        """Take up to `limit` rows nobody holds (their lease ran out) and hold them until `lease_until`."""
        async with self._writer.begin() as conn:
            # SKIP LOCKED (PostgreSQL; SQLite has one writer at a time and ignores it): a gateway sweeping
            # while another's claim is in flight takes the rows that one did not, instead of choosing the
            # same rows, waiting for them and coming back with none.
            free = (
                select(rows.c.id)
                .where(rows.c.lease_until <= now)
                .order_by(rows.c.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            # The lease is tested again by the UPDATE itself: of two gateways sweeping at once, the one
            # that updates a row second finds it held and leaves it.
            taken = await conn.execute(
                update(rows)
                .where(rows.c.id.in_(free.scalar_subquery()), rows.c.lease_until <= now)
                .values(lease_until=lease_until)
                .returning(rows)
            )
            return [
                StoredDelivery(r.id, r.hook, r.event, r.event_id, r.body.encode(), r.attempt, r.due_at)
                for r in taken
            ]
