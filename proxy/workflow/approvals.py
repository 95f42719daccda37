"""Deciding requests: approvals (the one that completes N of M creates the grant), denials, cancellations,
and the after-the-fact review of break-glass access."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.access import policy as rules
from proxy.access.durations import format_duration
from proxy.access.events import ApprovalRecorded, BreakGlassReviewed, GrantCreated, RequestDecided
from proxy.access.policy import Rejected
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.identity.principals import Principal
from proxy.store.workflow import NewGrant, RequestConflict
from proxy.workflow.context import Outcome, WorkflowContext
from proxy.workflow.errors import Conflict, refusal


@dataclass(frozen=True, slots=True)
class Approvals:
    ctx: WorkflowContext

    async def approve(self, request_id: str, approver: Principal, comment: str = "") -> Outcome:
        """Approve as `approver`; the approval that completes N of M creates the grant (clock starts now)."""
        request = await self.ctx.request(request_id)
        requester = await self.ctx.principal(request.requester) or Principal(request.requester)
        now = self.ctx.now()
        verdict = rules.check_approval(self.ctx.policy, request, requester, approver, now)
        if isinstance(verdict, Rejected):
            raise refusal(verdict)
        comment = comment.strip()
        try:
            result = await self.ctx.requests.approve(
                request_id,
                approver.name,
                comment,
                now=now,
                required=verdict.required,
                grant=NewGrant(source="request", created_by=approver.name),
            )
        except RequestConflict as exc:
            raise Conflict("not_pending", str(exc)) from None
        if not result.counted:
            raise Conflict("already_approved", f"{approver.name} has already approved {request_id}")
        stored = result.request
        self.ctx.emit(ApprovalRecorded(now, approver.name, comment, stored))
        if result.grant is None:
            remaining = verdict.required - len(stored.approvals)
            return Outcome(stored, None, (), f"approval recorded; {remaining} more needed")
        await self.ctx.settled()
        self.ctx.emit(RequestDecided(now, approver.name, comment, stored))
        for made in (result.grant, *result.more):  # a bundle's grants, made together
            self.ctx.emit(GrantCreated(now, approver.name, comment, made))
        until = format_duration(stored.duration)
        message = f"approved: {stored.requester} has access for {until}"
        if result.grant.starts_at is not None:
            message += f" from {result.grant.starts_at.isoformat(timespec='minutes')} (scheduled)"
        return Outcome(stored, result.grant, (), message)

    async def deny(self, request_id: str, actor: Principal, comment: str = "") -> AccessRequest:
        request = await self.ctx.request(request_id)
        problem = rules.check_denial(self.ctx.policy, request, actor, self.ctx.now())
        if problem is not None:
            raise refusal(problem)
        return await self._close(request, RequestStatus.DENIED, actor, comment)

    async def cancel(self, request_id: str, actor: Principal, reason: str = "") -> AccessRequest:
        request = await self.ctx.request(request_id)
        problem = rules.check_cancel(request, actor, self.ctx.now())
        if problem is not None:
            raise refusal(problem)
        return await self._close(request, RequestStatus.CANCELLED, actor, reason)

    async def _close(
        self, request: AccessRequest, status: RequestStatus, actor: Principal, comment: str
    ) -> AccessRequest:
        now = self.ctx.now()
        try:
            closed = await self.ctx.requests.close_request(
                request.id, status, actor=actor.name, comment=comment.strip(), now=now
            )
        except RequestConflict as exc:
            raise Conflict("not_pending", str(exc)) from None
        self.ctx.emit(RequestDecided(now, actor.name, comment.strip(), closed))
        return closed

    async def review(self, request_id: str, actor: Principal, comment: str = "") -> AccessRequest:
        """Record the after-the-fact review of a break-glass request."""
        request = await self.ctx.request(request_id)
        problem = rules.check_review(self.ctx.policy, request, actor)
        if problem is not None:
            raise refusal(problem)
        now = self.ctx.now()
        try:
            reviewed = await self.ctx.requests.review(
                request_id, reviewer=actor.name, comment=comment.strip(), now=now
            )
        except RequestConflict as exc:
            raise Conflict("already_reviewed", str(exc)) from None
        self.ctx.emit(BreakGlassReviewed(now, actor.name, comment.strip(), reviewed))
        return reviewed

    async def can_approve(self, request: AccessRequest, approver: Principal) -> bool:
        requester = await self.ctx.principal(request.requester) or Principal(request.requester)
        return rules.may_approve_now(self.ctx.policy, request, requester, approver, self.ctx.now())
