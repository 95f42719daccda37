"""The gateway's in-memory view of grants and keys, refreshed from the store when it changes.

S3 requests read the current view without touching the database; a background task polls the store's
change counter and swaps in a new view. If the store stays unreachable past the grace period the view
is no longer trusted and requests fail closed with ServiceUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from proxy.access.index import GrantIndex
from proxy.errors import S3Error
from proxy.grant_source import GrantSource
from proxy.identity.keyring import KeyRing
from proxy.written import WrittenVersion

log = structlog.get_logger("grantgate.state")

# A change to the store reloads only the grants and keys it stamped. Now and then everything is reloaded:
# a safety net against a write that did not stamp what it changed, and the only pruning of grants that
# expired (expiry itself is checked per request). Loading 100 000 grants costs a worker about 1.5 s of
# CPU, so it is rare.
FULL_RESYNC_SECONDS = 600.0
# The change-counter query is tiny: a store that does not answer it within this is unhealthy.
REFRESH_TIMEOUT_SECONDS = 5.0
# Loading every active grant is not: 100 000 grants take seconds. Bounded still, so a hung store
# is noticed, but far above what a healthy store needs.
SNAPSHOT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class View:
    grants: GrantIndex
    keys: KeyRing
    version: int
    checked_at: float  # monotonic time of the last successful contact with the store


class LiveState:
    def __init__(
        self,
        store: GrantSource,
        server_key: bytes,
        *,
        interval: float,
        grace: float,
        written: WrittenVersion | None = None,
    ) -> None:
        self.store = store
        # This gateway's own writes, shared with its sibling workers (see proxy/written.py).
        self.written = written if written is not None else WrittenVersion()
        # One refresh at a time: the poll and a catch-up must not swap in views out of order.
        self._refreshing = asyncio.Lock()
        self._catch_up_after = 0.0
        self._server_key = server_key
        self._interval = interval
        self._grace = grace
        self._view: View | None = None
        self._built_at = 0.0
        self._wake = asyncio.Event()
        # Monotonic time of the first refresh that failed since the last that worked; None when healthy.
        self.failing_since: float | None = None

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
    def store_healthy(self) -> bool:
        """False while the store cannot be reached (the view may still be within its grace period)."""
        return self.failing_since is None

    def wake(self) -> None:
        """Refresh now rather than at the next poll: the store announced a change (LISTEN/NOTIFY)."""
        self._wake.set()

    @property
    def version(self) -> int | None:
        return self._view.version if self._view is not None else None

    @property
    def behind(self) -> bool:
        """This gateway wrote a change the view does not hold yet: catch up before deciding."""
        view = self._view
        return (
            view is not None
            and view.version < self.written.value
            and self.failing_since is None
            and time.monotonic() >= self._catch_up_after
        )

    async def catch_up(self) -> None:
        """Load what this gateway's control plane wrote, before the S3 request that follows it.

        A store that cannot answer leaves the view as it is (the poll notices and reports it), and no
        catch-up is tried again for a poll interval, so requests do not queue behind a sick store.
        """
        async with self._refreshing:
            if not self.behind:  # another request caught up while this one waited
                return
            try:
                await self._refresh(force=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._catch_up_after = time.monotonic() + self._interval
                log.warning("state_catch_up_failed", error=repr(exc))

    async def settle_own_write(self) -> None:
        """After a write this process made: publish its version to the sibling workers and bring this
        worker's view up to it, so the answer that follows is already true on the S3 port."""
        self.written.publish(await self.store.version())
        await self.catch_up()

    async def refresh(self, *, force: bool = False) -> None:
        async with self._refreshing:
            await self._refresh(force=force)

    async def _refresh(self, *, force: bool) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that lands
        # as the awaited call finishes (gh-86296), and a worker then never stops on SIGTERM.
        async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
            version = await self.store.version()
        current = self._view
        stale = time.monotonic() - self._built_at > FULL_RESYNC_SECONDS
        if current is not None and version == current.version and not force and not stale:
            self._view = View(current.grants, current.keys, current.version, time.monotonic())
            return
        # Only the grants changed since the version held, merged into it; a full load when there is
        # nothing to build on, as the safety net, or when the version went back (a restored backup:
        # what the gateway holds may be newer than anything in the store).
        since = None
        if current is not None and not force and not stale and version > current.version:
            since = current.version
        async with asyncio.timeout(SNAPSHOT_TIMEOUT_SECONDS):
            snapshot = await self.store.snapshot(datetime.now(UTC), since=since)
        if current is None or snapshot.since is None:
            # Indexing many grants and deriving every key's secret take a while: off the event loop, so
            # requests keep flowing meanwhile.
            grants, keys = await asyncio.to_thread(
                lambda: (
                    GrantIndex.build(snapshot.grants, snapshot.version),
                    KeyRing.build(snapshot.keys, self._server_key, snapshot.sessions_not_before),
                )
            )
            self._built_at = time.monotonic()
        else:
            grants = current.grants.updated(snapshot.grants, snapshot.retired, snapshot.version)
            keys = current.keys.updated(snapshot.keys, snapshot.sessions_not_before)
        self._view = View(grants, keys, snapshot.version, time.monotonic())
        if current is None or current.version != snapshot.version:
            log.info(
                "state_loaded",
                version=snapshot.version,
                changes_since=snapshot.since,
                grants=len(grants),
                grants_changed=len(snapshot.grants) + len(snapshot.retired),
                keys=len(keys),
                keys_changed=len(snapshot.keys),
            )

    async def run(self) -> None:
        while True:
            # A notification cuts the wait short; the poll stays as the safety net (and SQLite's only way).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                # refresh() bounds each store call, so a store that hangs is noticed as unhealthy.
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.error("store_unreachable", error=repr(exc), grace_seconds=self._grace)
                else:
                    log.debug("state_refresh_failed", error=repr(exc))
            else:
                if self.failing_since is not None:
                    log.info("store_reachable", down_seconds=round(time.monotonic() - self.failing_since, 3))
                    self.failing_since = None
