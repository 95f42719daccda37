"""The access workflow: requests, approvals, denials, revocations and expiry, over the store.

Every interface (JSON API, web pages, Slack, CLI) goes through this one `Workflow`, so the same rules
apply everywhere. It only composes the services that do the work, one concern per module: requests.py
(asking, reading requests), approvals.py (deciding them), grants.py (reading, revoking), standing.py
(the policy's standing access), sweeps.py (expiry), reviews.py (periodic reviews of long-held
access), tokens.py (API callers). The rules themselves are pure
functions in access/policy.py; the services load what they need, apply the decisions atomically in the
store, and emit one event per state change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from proxy.access.policy import Policy
from proxy.observe.events import EventBus
from proxy.store.sql import SqlStore
from proxy.store.workflow import WorkflowStore
from proxy.workflow.approvals import Approvals
from proxy.workflow.context import POLICY, SYSTEM, Outcome, WorkflowContext, log, utc_now
from proxy.workflow.errors import Conflict, Forbidden, Invalid, NotFound, WorkflowError
from proxy.workflow.grants import Grants
from proxy.workflow.oncall import PagerDutyOnCall
from proxy.workflow.requests import Requests
from proxy.workflow.reviews import Reviews
from proxy.workflow.standing import Standing
from proxy.workflow.sweeps import Sweep, Sweeps
from proxy.workflow.tokens import Tokens

__all__ = [
    "POLICY",
    "SYSTEM",
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "Outcome",
    "Sweep",
    "Workflow",
    "WorkflowError",
    "running_workflow",
    "utc_now",
]


class Workflow:
    """The workflow's services over one store, policy, event bus and clock, under the names callers use."""

    def __init__(
        self,
        store: SqlStore,
        policy: Policy,
        bus: EventBus,
        *,
        clock: Callable[[], datetime] = utc_now,
        settle: Callable[[], Awaitable[None]] | None = None,
        oncall: PagerDutyOnCall | None = None,
    ) -> None:
        self.ctx = WorkflowContext(store, WorkflowStore(store), policy, bus, clock, settle, oncall)
        self.access_requests = Requests(self.ctx)
        self.approvals = Approvals(self.ctx)
        self.grants = Grants(self.ctx)
        self.standing = Standing(self.ctx)
        self.sweeps = Sweeps(self.ctx)
        self.reviews = Reviews(self.ctx)
        self.tokens = Tokens(self.ctx)

        self.request_access = self.access_requests.request_access
        self.get_request = self.access_requests.get_request
        self.list_requests = self.access_requests.list_requests
        self.inbox = self.access_requests.inbox
        self.approve = self.approvals.approve
        self.deny = self.approvals.deny
        self.cancel = self.approvals.cancel
        self.review = self.approvals.review
        self.can_approve = self.approvals.can_approve
        self.get_grant = self.grants.get_grant
        self.list_grants = self.grants.list_grants
        self.revoke = self.grants.revoke
        self.sync_standing = self.standing.sync
        self.sweep = self.sweeps.sweep
        self.authenticate_token = self.tokens.authenticate
        self.principal = self.ctx.principal
        self.now = self.ctx.now

    @property
    def store(self) -> SqlStore:
        return self.ctx.store

    @property
    def requests(self) -> WorkflowStore:
        """The workflow's store (requests, approvals, tokens), for reads that need no rule."""
        return self.ctx.requests

    @property
    def bus(self) -> EventBus:
        return self.ctx.bus

    @property
    def policy(self) -> Policy:
        return self.ctx.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self.ctx.policy = policy


@contextlib.asynccontextmanager
async def running_workflow(workflow: Workflow, interval: float) -> AsyncIterator[Workflow]:
    """Sync standing access, then sweep every `interval` seconds until the block ends."""
    networks = workflow.policy.allowed_networks()
    if networks:
        # Said at every start so nobody mistakes the setting for a firewall.
        log.warning(
            "source_cidrs_not_enforced",
            resources=sorted(networks),
            detail="source_cidrs are recorded on requests and offered to anomaly detection; "
            "the S3 listener does not refuse other networks",
        )
    await workflow.sync_standing()
    task = asyncio.create_task(_sweep_forever(workflow, interval), name="workflow-sweep")
    try:
        yield workflow
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sweep_forever(workflow: Workflow, interval: float) -> None:
    while True:
        # One failing sweep does not hold up the other: expiry and reviews are independent.
        for name, sweep in (("expiry", workflow.sweeps.sweep), ("reviews", workflow.reviews.sweep)):
            try:
                await sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("workflow_sweep_failed", sweep=name, error=repr(exc))
        await asyncio.sleep(interval)
