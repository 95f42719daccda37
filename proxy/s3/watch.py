"""Re-authorizes a transfer in flight, so a revoked or expired grant, or a revoked access key, stops it
within a second.

The streaming loops call `check()` once per chunk: a monotonic clock comparison, and at most every
`period` seconds a decision against the current in-memory view (a dict lookup, no database).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from proxy.access.decide import BUDGET_SPENT, Allow, Deny
from proxy.access.grants import Target
from proxy.errors import S3Error
from proxy.live_state import View
from proxy.observe.events import Outcome

RECHECK_SECONDS = 0.25


@dataclass(eq=False)
class TransferCut(S3Error):
    """A transfer no longer allowed: an upload answers with it; a download's connection is aborted."""

    outcome: Outcome = Outcome.REVOKED


class TransferWatch:
    __slots__ = ("_access_key_id", "_clock", "_next", "_period", "_principal", "_targets", "_view")

    def __init__(
        self,
        view: Callable[[datetime], View],
        principal: str,
        targets: list[Target],
        *,
        access_key_id: str | None = None,
        period: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`access_key_id`: the long-lived key the transfer was signed with, cut too once revoked. A
        session's key is not in the key ring: a session ends with its expiry or its grant."""
        self._view = view
        self._access_key_id = access_key_id
        self._principal = principal
        self._targets = targets
        self._period = period
        self._clock = clock
        self._next = clock() + period

    def check(self) -> None:
        """Raise TransferCut if, at a due re-check, the targets are no longer allowed."""
        moment = self._clock()
        if moment < self._next:
            return
        self._next = moment + self._period
        self.recheck(datetime.now(UTC))

    def recheck(self, now: datetime) -> None:
        try:
            view = self._view(now)
        except S3Error:  # the state is past its grace period: nothing may go on
            raise TransferCut(
                "ServiceUnavailable",
                "Access state is unavailable; try again shortly.",
                503,
                outcome=Outcome.STATE_UNAVAILABLE,
            ) from None
        if self._access_key_id is not None and self._access_key_id not in view.keys.entries:
            raise TransferCut(
                "AccessDenied", "Access Denied: the access key for this transfer was revoked.", 403
            )
        decision = view.grants.decide(self._principal, self._targets, now)
        # A spent budget stops new reads; a transfer in flight is held to what it reserved by its own
        # draw on the budget (proxy/s3/budget.py), so it is not cut here with its reservation unused.
        if not isinstance(decision, Allow) and not (
            isinstance(decision, Deny) and decision.reason == BUDGET_SPENT
        ):
            raise TransferCut(
                "AccessDenied", "Access Denied: the grant for this transfer was revoked or has expired.", 403
            )
