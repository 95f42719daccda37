"""Change notifications on PostgreSQL: every version bump NOTIFYs, and gateways LISTEN to refresh at once.

The notification carries no data; it only wakes the refresher, which reads the version and the snapshot
as it always does. A missed notification costs at most one poll interval, since polling continues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger("grantgate.state")

CHANNEL = "grantgate_state"
NOTIFY_SQL = f"NOTIFY {CHANNEL}"
RECONNECT_MAX_SECONDS = 5.0
# How often a listening connection is checked for a silent death (the termination callback covers a
# clean close; this covers the rest).
LIVENESS_SECONDS = 5.0


async def listen_for_changes(engine: AsyncEngine, on_change: Callable[[], None]) -> None:
    """Call `on_change` on every store change, until cancelled; reconnects by itself after a failure.

    It is also called after each (re)connection, since changes made while not listening were missed.
    """
    delay = 0.2
    while True:
        try:
            await _listen_once(engine, on_change)
            delay = 0.2
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("state_listen_failed", error=repr(exc), retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX_SECONDS)


async def _listen_once(engine: AsyncEngine, on_change: Callable[[], None]) -> None:
    async with engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection
        lost = asyncio.Event()

        def notified(*_args: Any) -> None:
            on_change()

        raw.add_termination_listener(lambda _conn: lost.set())
        await raw.add_listener(CHANNEL, notified)
        log.info("state_listening", channel=CHANNEL)
        on_change()
        try:
            while not lost.is_set():
                # asyncio.timeout: wait_for may swallow a cancellation on Python 3.11 (see state.py).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LIVENESS_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    async with asyncio.timeout(LIVENESS_SECONDS):
                        await raw.execute("SELECT 1")
        finally:
            # Never hand a listening (or dead) connection back to the pool: close it.
            with contextlib.suppress(Exception):
                await conn.invalidate()
        log.warning("state_listen_lost", channel=CHANNEL)
