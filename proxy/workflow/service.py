"""The access workflow: requests, approvals, denials, revocations and expiry, over the store.

Every interface (JSON API, web pages, CLI) goes through this one service, so the same rules apply
everywhere. The rules themselves are pure functions in policy.py; this module loads what they need,
applies their decisions atomically in the store, and emits one event per state change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import structlog

from proxy.access import policy as rules
from proxy.access.budgets import Budget
from proxy.access.durations import format_duration, parse_duration
from proxy.access.events import (
    ApprovalRecorded,
    BreakGlassReviewed,
    BreakGlassUsed,
    GrantCreated,
    GrantExpired,
    GrantExpiring,
    GrantRevoked,
    RequestCreated,
    RequestDecided,
    WorkflowEvent,
)
from proxy.access.grants import Action, Grant, parse_actions, parse_resource
from proxy.access.policy import Ask, Instant, NeedsApproval, Policy, Rejected
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.identity.principals import Principal
from proxy.observe.events import EventBus
from proxy.store.sql import SqlStore
from proxy.store.workflow import (
    NewGrant,
    RequestConflict,
    StandingEntry,
    WorkflowStore,
    new_request_id,
)

log = structlog.get_logger("grantgate.workflow")

SYSTEM = "system"  # the actor of changes nobody made by hand: expiry, standing access
POLICY = "policy"


class WorkflowError(Exception):
    """A refusal fit to show to the person who asked. `code` is stable for programs."""

    kind = "invalid"  # invalid | forbidden | not_found | conflict

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Invalid(WorkflowError):
    kind = "invalid"


class Forbidden(WorkflowError):
    kind = "forbidden"


class NotFound(WorkflowError):
    kind = "not_found"


class Conflict(WorkflowError):
    kind = "conflict"


def _refusal(rejected: Rejected) -> WorkflowError:
    if rejected.code in rules.FORBIDDEN_CODES:
        return Forbidden(rejected.code, rejected.message)
    if rejected.code in ("not_pending", "already_approved", "already_reviewed"):
        return Conflict(rejected.code, rejected.message)
    return Invalid(rejected.code, rejected.message)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a create or approve did: the request as stored, its grant if one was made, and a summary."""

    request: AccessRequest
    grant: Grant | None = None
    already_granted: tuple[Grant, ...] = ()  # active grants that already cover what was asked
    message: str = ""


@dataclass(frozen=True, slots=True)
class Sweep:
    expired_requests: tuple[AccessRequest, ...] = ()
    expiring_grants: tuple[Grant, ...] = ()
    expired_grants: tuple[Grant, ...] = ()


def utc_now() -> datetime:
    return datetime.now(UTC)


class Workflow:
    def __init__(
        self,
        store: SqlStore,
        policy: Policy,
        bus: EventBus,
        *,
        clock: Callable[[], datetime] = utc_now,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.requests = WorkflowStore(store)
        self.policy = policy
        self.bus = bus
        self._clock = clock
        # Run after a grant was created or revoked and before saying so: the gateway's S3 listener
        # (every worker) honours the change by then (LiveState.settle_own_write).
        self._settle = settle

    def now(self) -> datetime:
        return self._clock()

    # --- who is asking ---

    async def principal(self, name: str) -> Principal | None:
        """A principal with its groups as stored now (group changes apply at once)."""
        return await self.store.get_principal(name)

    async def authenticate_token(self, token: str) -> Principal | None:
        return await self.requests.principal_for_token(token)

    # --- requests ---

    async def request_access(
        self,
        requester: Principal,
        resource: str,
        actions: str | Iterable[str | Action],
        duration: str | timedelta | None = None,
        justification: str = "",
        *,
        break_glass: bool = False,
        ticket: str = "",
        starts_at: datetime | None = None,
        budget: Budget | None = None,
    ) -> Outcome:
        """Ask for access. Granted at once (instant groups, no approval needed, break-glass), pending
        approval, or refused with a WorkflowError that says why.

        `starts_at`: scheduled access, in force only from then for the duration (approved ahead or
        not); a moment already past means now.
        """
        bucket, prefix = self._locate(resource)
        prefix = self.policy.canonical_prefix(bucket, prefix)
        wanted = self._actions(actions)
        lifetime = self._duration(duration)
        ask = Ask(
            requester,
            bucket,
            prefix,
            wanted,
            lifetime,
            justification.strip(),
            break_glass,
            ticket.strip(),
            budget,
        )
        evaluation = rules.evaluate(self.policy, ask)
        if isinstance(evaluation, Rejected):
            raise _refusal(evaluation)
        now = self.now()
        if starts_at is not None and starts_at.tzinfo is None:
            raise Invalid("invalid_starts_at", "starts_at needs a time zone, e.g. 2025-06-01T22:00:00Z")
        if starts_at is not None and starts_at <= now:
            starts_at = None
        if starts_at is not None and break_glass:
            raise Invalid("invalid_starts_at", "break-glass access is for now; it cannot be scheduled")
        active = await self.store.list_grants(principal=requester.name, active_at=now)
        covered = rules.covering_grants(active, requester.name, bucket, prefix, wanted, now)
        request = AccessRequest(
            id=new_request_id(),
            requester=requester.name,
            resource_name=evaluation.resource.name,
            bucket=bucket,
            prefix=prefix,
            actions=wanted,
            duration=evaluation.duration,
            justification=ask.justification,
            status=RequestStatus.PENDING,
            created_at=now,
            expires_at=now + self.policy.pending_ttl,
            approvals_required=max(evaluation.rule.approvals_required, 1)
            if isinstance(evaluation, NeedsApproval)
            else 0,
            break_glass=break_glass,
            source_cidrs=evaluation.rule.source_cidrs,
            starts_at=starts_at,
            ticket=ask.ticket,
            budget=rules.granted_budget(evaluation.rule, budget),
        )
        if isinstance(evaluation, Instant):
            return await self._grant_now(request, evaluation, covered)
        stored = await self.requests.insert_request(request)
        self._emit(RequestCreated(now, requester.name, stored.justification, stored))
        waiting = (
            f"waiting for {evaluation.approvals_required} approval(s) from "
            f"{', '.join(sorted(evaluation.rule.approver_groups))}"
        )
        return Outcome(stored, None, covered, _with_cover_note(waiting, covered, now))

    async def _grant_now(
        self, request: AccessRequest, instant: Instant, covered: tuple[Grant, ...]
    ) -> Outcome:
        why = {
            "instant_group": "approved instantly: member of "
            + ", ".join(sorted(instant.rule.instant_groups)),
            "no_approval_required": "approved instantly: no approval required",
            "break_glass": "break-glass: granted without approval, flagged for review",
        }[instant.why]
        source = "break-glass" if instant.why == "break_glass" else "request"
        now = request.created_at
        approved = replace(
            request, status=RequestStatus.APPROVED, decided_by=POLICY, decided_at=now, decision_comment=why
        )
        stored = await self.requests.insert_request(approved, NewGrant(source=source, created_by=POLICY))
        grant = await self.store.get_grant(stored.grant_id or "")
        assert grant is not None
        await self._settled()
        self._emit(RequestCreated(now, stored.requester, stored.justification, stored))
        self._emit(RequestDecided(now, POLICY, why, stored))
        self._emit(GrantCreated(now, POLICY, why, grant))
        if stored.break_glass:
            self._emit(BreakGlassUsed(now, stored.requester, stored.justification, stored, grant))
        return Outcome(stored, grant, covered, _with_cover_note(why, covered, now))

    async def approve(self, request_id: str, approver: Principal, comment: str = "") -> Outcome:
        """Approve as `approver`; the approval that completes N of M creates the grant (clock starts now)."""
        request = await self._request(request_id)
        requester = await self.principal(request.requester) or Principal(request.requester)
        now = self.now()
        verdict = rules.check_approval(self.policy, request, requester, approver, now)
        if isinstance(verdict, Rejected):
            raise _refusal(verdict)
        comment = comment.strip()
        try:
            result = await self.requests.approve(
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
        self._emit(ApprovalRecorded(now, approver.name, comment, stored))
        if result.grant is None:
            remaining = verdict.required - len(stored.approvals)
            return Outcome(stored, None, (), f"approval recorded; {remaining} more needed")
        await self._settled()
        self._emit(RequestDecided(now, approver.name, comment, stored))
        self._emit(GrantCreated(now, approver.name, comment, result.grant))
        until = format_duration(stored.duration)
        message = f"approved: {stored.requester} has access for {until}"
        if result.grant.starts_at is not None:
            message += f" from {result.grant.starts_at.isoformat(timespec='minutes')} (scheduled)"
        return Outcome(stored, result.grant, (), message)

    async def deny(self, request_id: str, actor: Principal, comment: str = "") -> AccessRequest:
        request = await self._request(request_id)
        problem = rules.check_denial(self.policy, request, actor, self.now())
        if problem is not None:
            raise _refusal(problem)
        return await self._close(request, RequestStatus.DENIED, actor, comment)

    async def cancel(self, request_id: str, actor: Principal, reason: str = "") -> AccessRequest:
        request = await self._request(request_id)
        problem = rules.check_cancel(request, actor, self.now())
        if problem is not None:
            raise _refusal(problem)
        return await self._close(request, RequestStatus.CANCELLED, actor, reason)

    async def _close(
        self, request: AccessRequest, status: RequestStatus, actor: Principal, comment: str
    ) -> AccessRequest:
        now = self.now()
        try:
            closed = await self.requests.close_request(
                request.id, status, actor=actor.name, comment=comment.strip(), now=now
            )
        except RequestConflict as exc:
            raise Conflict("not_pending", str(exc)) from None
        self._emit(RequestDecided(now, actor.name, comment.strip(), closed))
        return closed

    async def review(self, request_id: str, actor: Principal, comment: str = "") -> AccessRequest:
        """Record the after-the-fact review of a break-glass request."""
        request = await self._request(request_id)
        problem = rules.check_review(self.policy, request, actor)
        if problem is not None:
            raise _refusal(problem)
        now = self.now()
        try:
            reviewed = await self.requests.review(
                request_id, reviewer=actor.name, comment=comment.strip(), now=now
            )
        except RequestConflict as exc:
            raise Conflict("already_reviewed", str(exc)) from None
        self._emit(BreakGlassReviewed(now, actor.name, comment.strip(), reviewed))
        return reviewed

    # --- reading ---

    async def get_request(self, request_id: str, viewer: Principal) -> AccessRequest:
        request = await self._request(request_id)
        if not rules.may_view_request(self.policy, request, viewer):
            # Not "forbidden": that would confirm the id exists to someone who may not see it.
            raise NotFound("not_found", f"no request {request_id}")
        return request

    async def list_requests(
        self,
        viewer: Principal,
        *,
        status: RequestStatus | None = None,
        requester: str | None = None,
        approvable: bool = False,
        limit: int = 500,
    ) -> list[AccessRequest]:
        """Requests `viewer` may see (their own; those they approve; all for admins), newest first.

        `approvable`: only pending requests `viewer` could approve right now (the approver's inbox).
        """
        visible = None
        if not self.policy.is_admin(viewer):
            resources = [r.name for r in self.policy.resources if self.policy.is_approver_of(viewer, r.name)]
            visible = (viewer.name, resources)
        if approvable:
            status = RequestStatus.PENDING
        found = await self.requests.list_requests(
            status=status, requester=requester, visible_to=visible, limit=limit
        )
        if not approvable:
            return found
        now = self.now()
        requesters = {name: await self.principal(name) for name in {r.requester for r in found}}
        return [
            r
            for r in found
            if rules.may_approve_now(
                self.policy, r, requesters[r.requester] or Principal(r.requester), viewer, now
            )
        ]

    async def inbox(self, approver: Principal) -> list[AccessRequest]:
        return await self.list_requests(approver, approvable=True)

    async def can_approve(self, request: AccessRequest, approver: Principal) -> bool:
        requester = await self.principal(request.requester) or Principal(request.requester)
        return rules.may_approve_now(self.policy, request, requester, approver, self.now())

    async def get_grant(self, grant_id: str, viewer: Principal) -> Grant:
        grant = await self.store.get_grant(grant_id)
        if grant is None or not rules.may_view_grant(self.policy, grant, viewer):
            raise NotFound("not_found", f"no grant {grant_id}")
        return grant

    async def list_grants(
        self, viewer: Principal, *, principal: str | None = None, active: bool | None = True
    ) -> list[Grant]:
        """Grants `viewer` may see; `active`: True only active ones, False only ended ones, None all."""
        now = self.now()
        found = await self.store.list_grants(principal=principal, active_at=now if active else None)
        if active is False:
            found = [g for g in found if not g.is_active(now)]
        return [g for g in found if rules.may_view_grant(self.policy, g, viewer)]

    # --- ending grants ---

    async def revoke(self, grant_id: str, actor: Principal, reason: str = "") -> Grant:
        """Revoke a grant (its holder, an approver of its resource, or an admin). Idempotent."""
        grant = await self.store.get_grant(grant_id)
        if grant is None:
            raise NotFound("not_found", f"no grant {grant_id}")
        if not rules.may_revoke(self.policy, grant, actor):
            # Grant ids are unguessable, so whoever names one learns nothing by hearing whose it is not.
            raise Forbidden(
                "not_yours",
                f"grant {grant_id} is not yours: only its holder, an approver of its resource or an admin "
                "may revoke it",
            )
        if grant.revoked_at is not None:
            return grant
        now = self.now()
        revoked = await self.store.revoke_grant(grant_id, now=now, actor=actor.name, reason=reason.strip())
        assert revoked is not None
        await self._settled()
        if revoked.revoked_at == now:
            self._emit(GrantRevoked(now, actor.name, reason.strip(), revoked))
        return revoked

    # --- background work ---

    async def sync_standing(self) -> tuple[list[Grant], list[Grant]]:
        """Materialise the policy's standing access as grants (audited like any other)."""
        wanted: list[StandingEntry] = []
        for entry in self.policy.standing:
            resource = self.policy.resource(entry.resource)
            assert resource is not None, "validated at load"
            wanted.extend(
                StandingEntry(entry.principal, p.bucket, p.prefix, entry.actions) for p in resource.paths
            )
        now = self.now()
        created, revoked = await self.requests.sync_standing(wanted, now=now)
        for grant in created:
            self._emit(GrantCreated(now, POLICY, "standing access in the policy", grant))
        for grant in revoked:
            self._emit(GrantRevoked(now, POLICY, "standing access removed from the policy", grant))
        return created, revoked

    async def sweep(self) -> Sweep:
        """Expire lapsed pending requests; warn about grants about to end and report those that ended.

        Safe to run from every gateway at once: each item is claimed by exactly one of them.
        """
        now = self.now()
        expired = await self.requests.expire_pending(now)
        ttl = format_duration(self.policy.pending_ttl)
        for request in expired:
            self._emit(RequestDecided(now, SYSTEM, f"no decision within {ttl}", request))
        expiring = await self.requests.claim_expiring(now, self.policy.expiry_warning)
        for grant in expiring:
            left = format_duration((grant.expires_at or now) - now)
            self._emit(GrantExpiring(now, SYSTEM, f"expires in {left}", grant))
        ended = await self.requests.claim_expired(now)
        for grant in ended:
            self._emit(GrantExpired(now, SYSTEM, "reached its expiry", grant))
        return Sweep(tuple(expired), tuple(expiring), tuple(ended))

    # --- plumbing ---

    async def _request(self, request_id: str) -> AccessRequest:
        request = await self.requests.get_request(request_id)
        if request is None:
            raise NotFound("not_found", f"no request {request_id}")
        return request

    def _locate(self, resource: str) -> tuple[str, str]:
        """`s3://bucket/prefix`, or the name of a policy resource that has exactly one path."""
        text = resource.strip()
        if not text.startswith("s3://"):
            named = self.policy.resource(text)
            if named is None:
                known = ", ".join(r.name for r in self.policy.resources) or "none"
                raise Invalid(
                    "invalid_resource",
                    f"unknown resource {resource!r}: name one of the policy's resources ({known}) "
                    "or give s3://bucket/prefix",
                )
            if len(named.paths) != 1:
                paths = ", ".join(str(p) for p in named.paths)
                raise Invalid(
                    "ambiguous_resource", f"{named.name} has several paths; request one of: {paths}"
                )
            return named.paths[0].bucket, named.paths[0].prefix
        try:
            return parse_resource(text)
        except ValueError as exc:
            raise Invalid("invalid_resource", str(exc)) from None

    @staticmethod
    def _actions(actions: str | Iterable[str | Action]) -> frozenset[Action]:
        values = actions if isinstance(actions, str) else [str(a) for a in actions]
        try:
            return parse_actions(values)
        except ValueError as exc:
            raise Invalid("invalid_actions", str(exc)) from None

    @staticmethod
    def _duration(duration: str | timedelta | None) -> timedelta | None:
        if duration is None or isinstance(duration, timedelta):
            return duration
        if not duration.strip():
            return None
        try:
            return parse_duration(duration)
        except ValueError as exc:
            raise Invalid("invalid_duration", str(exc)) from None

    async def _settled(self) -> None:
        if self._settle is None:
            return
        try:
            await self._settle()
        except Exception as exc:
            # The change is stored; every worker still sees it within the refresh interval.
            log.warning("workflow_settle_failed", error=repr(exc))

    def _emit(self, event: WorkflowEvent) -> None:
        # The audit observer records events; this line is for someone debugging the workflow itself.
        log.debug(event.kind, **{k: v for k, v in event.as_dict().items() if k != "kind"})
        self.bus.emit(event)


def _with_cover_note(message: str, covered: tuple[Grant, ...], now: datetime) -> str:
    if not covered:
        return message
    best = max(covered, key=lambda g: (g.expires_at is None, g.expires_at or now))
    until = (
        "with no expiry"
        if best.expires_at is None
        else f"for another {format_duration(best.expires_at - now)}"
    )
    return f"{message}; note: grant {best.id} already gives you this access {until}"


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
        try:
            await workflow.sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("workflow_sweep_failed", error=repr(exc))
        await asyncio.sleep(interval)
