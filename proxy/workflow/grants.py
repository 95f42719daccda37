"""Reading grants as a viewer may see them, and ending them by hand (revocation)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.access import policy as rules
from proxy.access.events import GrantRevoked
from proxy.access.grants import Grant
from proxy.identity.principals import Principal
from proxy.workflow.context import WorkflowContext
from proxy.workflow.errors import Forbidden, NotFound


@dataclass(frozen=True, slots=True)
class Grants:
    ctx: WorkflowContext

    async def get_grant(self, grant_id: str, viewer: Principal) -> Grant:
        grant = await self.ctx.store.get_grant(grant_id)
        if grant is None or not rules.may_view_grant(self.ctx.policy, grant, viewer):
            raise NotFound("not_found", f"no grant {grant_id}")
        return grant

    async def list_grants(
        self, viewer: Principal, *, principal: str | None = None, active: bool | None = True
    ) -> list[Grant]:
        """Grants `viewer` may see; `active`: True only active ones, False only ended ones, None all."""
        now = self.ctx.now()
        found = await self.ctx.store.list_grants(principal=principal, active_at=now if active else None)
        if active is False:
            found = [g for g in found if not g.is_active(now)]
        return [g for g in found if rules.may_view_grant(self.ctx.policy, g, viewer)]

    async def revoke(self, grant_id: str, actor: Principal, reason: str = "") -> Grant:
        """Revoke a grant (its holder, an approver of its resource, or an admin). Idempotent."""
        grant = await self.ctx.store.get_grant(grant_id)
        if grant is None:
            raise NotFound("not_found", f"no grant {grant_id}")
        if not rules.may_revoke(self.ctx.policy, grant, actor):
            # Grant ids are unguessable, so whoever names one learns nothing by hearing whose it is not.
            raise Forbidden(
                "not_yours",
                f"grant {grant_id} is not yours: only its holder, an approver of its resource or an admin "
                "may revoke it",
            )
        if grant.revoked_at is not None:
            return grant
        now = self.ctx.now()
        revoked = await self.ctx.store.revoke_grant(
            grant_id, now=now, actor=actor.name, reason=reason.strip()
        )
        assert revoked is not None
        await self.ctx.settled()
        if revoked.revoked_at == now:
            self.ctx.emit(GrantRevoked(now, actor.name, reason.strip(), revoked))
        return revoked
