"""Standing access: the policy's always-on entries kept as grants, audited like any other."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.access.events import GrantCreated, GrantRevoked
from proxy.access.grants import Grant
from proxy.store.workflow import StandingEntry
from proxy.workflow.context import POLICY, WorkflowContext


@dataclass(frozen=True, slots=True)
class Standing:
    ctx: WorkflowContext

    async def sync(self) -> tuple[list[Grant], list[Grant]]:
        """Materialise the policy's standing access as grants: (created, revoked)."""
        policy = self.ctx.policy
        wanted: list[StandingEntry] = []
        for entry in policy.standing:
            resource = policy.resource(entry.resource)
            assert resource is not None, "validated at load"
            wanted.extend(
                StandingEntry(entry.principal, p.bucket, p.prefix, entry.actions) for p in resource.paths
            )
        now = self.ctx.now()
        created, revoked = await self.ctx.requests.sync_standing(wanted, now=now)
        for grant in created:
            self.ctx.emit(GrantCreated(now, POLICY, "standing access in the policy", grant))
        for grant in revoked:
            self.ctx.emit(GrantRevoked(now, POLICY, "standing access removed from the policy", grant))
        return created, revoked
