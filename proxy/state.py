"""The gateway's in-memory view of grants and keys, refreshed from the store when it changes.

S3 requests read the current view without touching the database; a background task polls the store's
change counter and swaps in a new view. If the store stays unreachable past the grace period the view
is no longer trusted and requests fail closed with ServiceUnavailable.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from proxy.access.index import GrantIndex
from proxy.identity.keyring import KeyRing
from proxy.s3.errors import S3Error
from proxy.store.sql import SqlStore

log = structlog.get_logger("grantgate.state")

# Even when the change counter says nothing changed, rebuild now and then: a safety net against a
# missed change and the way grants that began in the future become visible.
FULL_RESYNC_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class View:
    grants: GrantIndex
    keys: KeyRing
    version: int
    checked_at: float  # monotonic time of the last successful contact with the store


class LiveState:
    def __init__(self, store: SqlStore, server_key: bytes, *, interval: float, grace: float) -> None:
        self.store = store
        self._server_key = server_key
        self._interval = interval
        self._grace = grace
        self._view: View | None = None
        self._built_at = 0.0

    def view(self, now: datetime | None = None) -> View:
        """The current view, or ServiceUnavailable if it is too old to be trusted."""
        view = self._view
        if view is None or time.monotonic() - view.checked_at > self._grace:
            raise S3Error.service_unavailable("Access state is unavailable; try again shortly.")
        return view

    @property
    def ready(self) -> bool:
        return self._view is not None and time.monotonic() - self._view.checked_at <= self._grace

    @property
    def version(self) -> int | None:
        return self._view.version if self._view is not None else None

    async def refresh(self, *, force: bool = False) -> None:
        version = await self.store.version()
        current = self._view
        stale = time.monotonic() - self._built_at > FULL_RESYNC_SECONDS
        if current is not None and version == current.version and not force and not stale:
            self._view = View(current.grants, current.keys, current.version, time.monotonic())
            return
        snapshot = await self.store.snapshot(datetime.now(UTC))
        self._view = View(
            GrantIndex.build(snapshot.grants, snapshot.version),
            KeyRing.build(snapshot.keys, self._server_key, snapshot.sessions_not_before),
            snapshot.version,
            time.monotonic(),
        )
        self._built_at = time.monotonic()
        if current is None or current.version != snapshot.version:
            log.info(
                "state_loaded", version=snapshot.version, grants=len(snapshot.grants), keys=len(snapshot.keys)
            )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("state_refresh_failed", error=repr(exc))
