"""What every workflow service shares: the stores, the policy, the event bus, the clock, and the wait for
the gateway to honour a grant change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from proxy.access.events import WorkflowEvent
from proxy.access.grants import Grant
from proxy.access.policy import Policy
from proxy.access.requests import AccessRequest
from proxy.identity.principals import Principal
from proxy.observe.events import AnomalyAlert, EventBus
from proxy.store.sql import SqlStore
from proxy.store.workflow import WorkflowStore
from proxy.workflow.errors import NotFound
from proxy.workflow.oncall import PagerDutyOnCall

log = structlog.get_logger("grantgate.workflow")

SYSTEM = "system"  # the actor of changes nobody made by hand: expiry, standing access
POLICY = "policy"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a create or approve did: the request as stored, its grant if one was made, and a summary."""

    request: AccessRequest
    grant: Grant | None = None
    already_granted: tuple[Grant, ...] = ()  # active grants that already cover what was asked
    message: str = ""


@dataclass(slots=True)
class WorkflowContext:
    """One per Workflow, shared by its services (so a policy swapped in is seen by all of them)."""

    store: SqlStore
    requests: WorkflowStore
    policy: Policy
    bus: EventBus
    clock: Callable[[], datetime] = utc_now
    # Run after a grant was created or revoked and before saying so: the gateway's S3 listener
    # (every worker) honours the change by then (LiveState.settle_own_write).
    settle: Callable[[], Awaitable[None]] | None = None
    # Who is on call, for rules that approve it at once (workflow/oncall.py).
    oncall: PagerDutyOnCall | None = None

    def now(self) -> datetime:
        return self.clock()

    async def principal(self, name: str) -> Principal | None:
        """A principal with its groups as stored now (group changes apply at once)."""
        return await self.store.get_principal(name)

    async def request(self, request_id: str) -> AccessRequest:
        """The stored request, or NotFound."""
        request = await self.requests.get_request(request_id)
        if request is None:
            raise NotFound("not_found", f"no request {request_id}")
        return request

    async def chain(self, grant: Grant, limit: int = 100) -> list[Grant]:
        """`grant` and the grants its extensions go back to, newest first (at most `limit`)."""
        found = [grant]
        while len(found) < limit:
            current = found[-1]
            request = await self.requests.get_request(current.request_id) if current.request_id else None
            previous = await self.store.get_grant(request.extends) if request and request.extends else None
            if previous is None:
                break
            found.append(previous)
        return found

    async def settled(self) -> None:
        if self.settle is None:
            return
        try:
            await self.settle()
        except Exception as exc:
            # The change is stored; every worker still sees it within the refresh interval.
            log.warning("workflow_settle_failed", error=repr(exc))

    def emit(self, event: WorkflowEvent) -> None:
        # The audit observer records events; this line is for someone debugging the workflow itself.
        log.debug(event.kind, **{k: v for k, v in event.as_dict().items() if k != "kind"})
        self.bus.emit(event)

    def alert(self, alert: AnomalyAlert) -> None:
        """An anomaly the workflow itself saw: audited, counted and sent to security like the traffic's."""
        self.bus.emit(alert)
