"""The workflow's timers: pending requests that lapse, grants about to end, grants that ended."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.access.durations import format_duration
from proxy.access.events import GrantExpired, GrantExpiring, RequestDecided
from proxy.access.grants import Grant
from proxy.access.requests import AccessRequest
from proxy.workflow.context import SYSTEM, WorkflowContext


@dataclass(frozen=True, slots=True)
class Sweep:
    expired_requests: tuple[AccessRequest, ...] = ()
    expiring_grants: tuple[Grant, ...] = ()
    expired_grants: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class Sweeps:
    ctx: WorkflowContext

    async def sweep(self) -> Sweep:
        """Expire lapsed pending requests; warn about grants about to end and report those that ended.

        Safe to run from every gateway at once: each item is claimed by exactly one of them.
        """
        ctx = self.ctx
        now = ctx.now()
        expired = await ctx.requests.expire_pending(now)
        ttl = format_duration(ctx.policy.pending_ttl)
        for request in expired:
            ctx.emit(RequestDecided(now, SYSTEM, f"no decision within {ttl}", request))
        expiring = await ctx.requests.claim_expiring(now, ctx.policy.expiry_warning)
        for grant in expiring:
            left = format_duration((grant.expires_at or now) - now)
            ctx.emit(GrantExpiring(now, SYSTEM, f"expires in {left}", grant))
        ended = await ctx.requests.claim_expired(now)
        for grant in ended:
            ctx.emit(GrantExpired(now, SYSTEM, "reached its expiry", grant))
        return Sweep(tuple(expired), tuple(expiring), tuple(ended))
