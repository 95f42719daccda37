"""A download drawing on its grant's budget: opened on the bucket's answer (before any byte reaches the
client), fed slices as it streams, settled when it ends.

Only reads under a grant with a budget get one; every other request pays a single `is None` check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

from multidict import CIMultiDictProxy

from proxy.access.budgets import Usage, format_size, served_span
from proxy.access.decide import Allow, Decision
from proxy.access.events import GrantBudgetSpent
from proxy.access.grants import Grant
from proxy.errors import S3Error
from proxy.observe.events import Outcome
from proxy.s3.operations import Operation
from proxy.s3.watch import TransferCut
from proxy.store.budgets import OBJECTS, READ_ONCE, SLICE, BudgetLedger, Claim, Refused

BUDGETED_OPERATIONS = frozenset({"GetObject"})
DENY_REASON = "budget_spent"


def budgeted_grant(op: Operation, decision: Decision | None) -> Grant | None:
    """The grant a read draws on, when it has a budget."""
    if op.name not in BUDGETED_OPERATIONS or not isinstance(decision, Allow):
        return None
    grant = decision.grants[0]
    return grant if grant.budget is not None else None


def spent_message(grant: Grant, why: str, public_url: str) -> str:
    more = f"{public_url}/request?" + urlencode({"resource": grant.resource, "action": "read"})
    budget = grant.budget
    if why == OBJECTS and budget is not None:
        detail = f"it allows {budget.max_objects} object(s) and all were read"
    elif why == READ_ONCE:
        detail = "it is single-use and these bytes of this object were already served"
    elif budget is not None and budget.max_bytes is not None:
        detail = f"all {format_size(budget.max_bytes)} of it were used"
    else:
        detail = "it is used up"
    return (
        f"Access Denied: the budget of grant {grant.id} on {grant.resource} is spent: {detail}. "
        f"Request more at {more}"
    )


def refused(grant: Grant, why: str, public_url: str) -> S3Error:
    err = S3Error.access_denied(spent_message(grant, why, public_url), resource=grant.resource)
    err.headers["x-grantgate-deny-reason"] = DENY_REASON
    return err


class BudgetedRead:
    """One GET under a budgeted grant."""

    def __init__(
        self,
        ledger: BudgetLedger,
        grant: Grant,
        bucket: str,
        key: str,
        public_url: str,
        announce: Callable[[GrantBudgetSpent], None],
    ) -> None:
        self._ledger = ledger
        self.grant = grant
        self._bucket = bucket
        self._key = key
        self._public_url = public_url
        self._announce = announce
        self._claim: Claim | None = None
        self._reserved = 0  # in all, for this transfer
        self._left = 0  # reserved and not yet sent
        self._remaining = 0  # bytes of the span not yet reserved

    async def open(self, status: int, headers: CIMultiDictProxy[str], content_length: int | None) -> None:
        """Before the answer's headers go out: refuse (as AccessDenied) a read the budget cannot take."""
        if status not in (200, 206):
            return  # nothing of the object leaves: 304, 412, 416, errors
        span = served_span(status, headers.get("Content-Range"), content_length)
        if span is None:  # a body of unknown extent cannot be counted: fail closed
            raise refused(self.grant, "", self._public_url)
        outcome = await self._ledger.open_read(self.grant, self._bucket, self._key, span, _now())
        if isinstance(outcome, Refused):
            if outcome.became_spent:
                self._spent(outcome.usage)
            raise refused(self.grant, outcome.reason, self._public_url)
        self._claim = outcome
        self._reserved = self._left = outcome.reserved
        self._remaining = span[1] - span[0] - outcome.reserved

    async def take(self, count: int) -> int:
        """How many of the next `count` bytes may be sent; fewer once the budget runs out."""
        if count > self._left and self._remaining > 0:
            wanted = min(max(SLICE, count - self._left), self._remaining)
            got = await self._ledger.reserve(self.grant, wanted)
            self._reserved += got
            self._left += got
            self._remaining -= got
        allowed = min(count, self._left)
        self._left -= allowed
        return allowed

    def cut(self) -> TransferCut:
        return TransferCut(
            "AccessDenied",
            spent_message(self.grant, "", self._public_url),
            403,
            outcome=Outcome.BUDGET_SPENT,
        )

    async def close(self) -> None:
        """Settle what was sent; shielded, so a client hanging up still leaves the ledger right."""
        if self._claim is None:
            return
        claim, self._claim = self._claim, None
        sent = self._reserved - self._left
        settled = await asyncio.shield(self._ledger.settle(self.grant, claim, self._reserved, sent, _now()))
        if settled.became_spent:
            self._spent(settled.usage)

    def _spent(self, usage: Usage) -> None:
        self._announce(GrantBudgetSpent(_now(), "system", "budget spent", self.grant, usage))


def _now() -> datetime:
    return datetime.now(UTC)
