"""Asking for access, and reading requests: a request is granted at once, left pending for approvers, or
refused with a reason. The rules are pure functions in access/policy.py; this applies their answers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from proxy.access import policy as rules
from proxy.access.budgets import Budget
from proxy.access.durations import format_duration, parse_duration
from proxy.access.events import BreakGlassUsed, GrantCreated, RequestCreated, RequestDecided
from proxy.access.grants import Action, Grant, parse_actions, parse_resource
from proxy.access.policy import Ask, Instant, NeedsApproval, Policy, Rejected, Resource
from proxy.access.requests import AccessRequest, RequestStatus, Via
from proxy.access.terms import TermsAcceptance, accepted, terms_sha256
from proxy.identity.principals import Principal
from proxy.observe.events import AnomalyAlert
from proxy.store.suspensions import GrantSuspensions
from proxy.store.workflow import NewGrant, new_request_id
from proxy.workflow.context import POLICY, Outcome, WorkflowContext
from proxy.workflow.errors import Forbidden, Invalid, NotFound, refusal, terms_refusal


@dataclass(frozen=True, slots=True)
class Requests:
    ctx: WorkflowContext

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
        accept_terms: str = "",
        via: Via = Via.API,
    ) -> Outcome:
        """Ask for access. Granted at once (instant groups, no approval needed, break-glass), pending
        approval, or refused with a WorkflowError that says why.

        `starts_at`: scheduled access, in force only from then for the duration (approved ahead or
        not); a moment already past means now. `accept_terms`: the SHA-256 of the resource's dataset
        terms as the requester was shown them (required when it has terms). `via`: where it was asked.
        """
        policy = self.ctx.policy
        bucket, prefix = locate(policy, resource)
        prefix = policy.canonical_prefix(bucket, prefix)
        wanted = wanted_actions(actions)
        lifetime = wanted_duration(duration)
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
        if self.ctx.oncall is not None:
            ask = await self.ctx.oncall.judged(policy, ask)
        evaluation = rules.evaluate(policy, ask)
        if isinstance(evaluation, Rejected):
            raise refusal(evaluation)
        now = self.ctx.now()
        terms = acceptance(evaluation.resource, requester, accept_terms, now)
        if starts_at is not None and starts_at.tzinfo is None:
            raise Invalid("invalid_starts_at", "starts_at needs a time zone, e.g. 2025-06-01T22:00:00Z")
        if starts_at is not None and starts_at <= now:
            starts_at = None
        if starts_at is not None and break_glass:
            raise Invalid("invalid_starts_at", "break-glass access is for now; it cannot be scheduled")
        active = await self.ctx.store.list_grants(principal=requester.name, active_at=now)
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
            expires_at=now + policy.pending_ttl,
            approvals_required=evaluation.approvals_required if isinstance(evaluation, NeedsApproval) else 0,
            break_glass=break_glass,
            source_cidrs=evaluation.rule.source_cidrs,
            starts_at=starts_at,
            ticket=ask.ticket,
            budget=rules.granted_budget(evaluation.rule, budget),
            protected=isinstance(evaluation, NeedsApproval) and evaluation.protected,
            terms=terms,
        )
        if isinstance(evaluation, Instant):
            return await self.grant_now(request, evaluation, covered, via=via)
        stored = await self.ctx.requests.insert_request(request)
        self.ctx.emit(RequestCreated(now, requester.name, stored.justification, stored))
        waiting = (
            f"waiting for {evaluation.approvals_required} approval(s) from "
            f"{', '.join(sorted(evaluation.rule.approver_groups))}"
        )
        return Outcome(stored, None, covered, _with_cover_note(waiting, covered, now))

    async def grant_now(
        self, request: AccessRequest, instant: Instant, covered: tuple[Grant, ...], *, via: Via = Via.API
    ) -> Outcome:
        why = {
            "instant_group": "approved instantly: member of "
            + ", ".join(sorted(instant.rule.instant_groups)),
            "no_approval_required": "approved instantly: no approval required",
            "on_call": f"approved instantly: on call in PagerDuty for {instant.rule.oncall_service}",
            "break_glass": "break-glass: granted without approval, flagged for review",
        }[instant.why]
        source = "break-glass" if instant.why == "break_glass" else "request"
        now = request.created_at
        await self.refuse_if_held(request, via)
        approved = replace(
            request, status=RequestStatus.APPROVED, decided_by=POLICY, decided_at=now, decision_comment=why
        )
        stored = await self.ctx.requests.insert_request(approved, NewGrant(source=source, created_by=POLICY))
        grant = await self.ctx.store.get_grant(stored.grant_id or "")
        assert grant is not None
        await self.ctx.settled()
        self.ctx.emit(RequestCreated(now, stored.requester, stored.justification, stored))
        self.ctx.emit(RequestDecided(now, POLICY, why, stored))
        self.ctx.emit(GrantCreated(now, POLICY, why, grant))
        if stored.break_glass:
            self.ctx.emit(BreakGlassUsed(now, stored.requester, stored.justification, stored, grant))
        return Outcome(stored, grant, covered, _with_cover_note(why, covered, now))

    async def refuse_if_held(self, request: AccessRequest, via: Via) -> None:
        """Nothing is granted at once (instant group, on call, no approval, break-glass, an extension)
        to someone an anomaly rule suspended until an approver who is not them re-confirms the
        suspension: otherwise a suspended thief re-requests and is back in. Requests that wait for
        approvers still go to them. The reason is not said: it may name a decoy. The security team is
        told, though: a suspended principal asking again is a signal in itself."""
        requester = request.requester
        since = await GrantSuspensions(self.ctx.store).held_since(requester)
        if since is None:
            return
        self.ctx.alert(held_asked(request, via, since, self.ctx.now()))
        raise Forbidden(
            "on_hold",
            f"{requester}'s access is on hold since {since.isoformat(timespec='seconds')} pending a "
            "security review: nothing is granted at once until an approver re-confirms the suspended "
            "grants; requests that need approval still go to the approvers",
        )

    async def get_request(self, request_id: str, viewer: Principal) -> AccessRequest:
        request = await self.ctx.request(request_id)
        if not rules.may_view_request(self.ctx.policy, request, viewer):
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
        policy = self.ctx.policy
        visible = None
        if not policy.is_admin(viewer):
            resources = [r.name for r in policy.resources if policy.is_approver_of(viewer, r.name)]
            visible = (viewer.name, resources)
        if approvable:
            status = RequestStatus.PENDING
        found = await self.ctx.requests.list_requests(
            status=status, requester=requester, visible_to=visible, limit=limit
        )
        if not approvable:
            return found
        now = self.ctx.now()
        requesters = {name: await self.ctx.principal(name) for name in {r.requester for r in found}}
        return [
            r
            for r in found
            if rules.may_approve_now(
                policy, r, requesters[r.requester] or Principal(r.requester), viewer, now
            )
        ]

    async def inbox(self, approver: Principal) -> list[AccessRequest]:
        return await self.list_requests(approver, approvable=True)


def acceptance(
    resource: Resource, requester: Principal, offered: str, now: datetime
) -> TermsAcceptance | None:
    """The requester's acceptance of `resource`'s dataset terms, refused unless `offered` is their hash."""
    if not resource.terms:
        return None
    if not accepted(resource.terms, offered):
        raise terms_refusal(resource, offered)
    return TermsAcceptance(requester.name, terms_sha256(resource.terms), resource.terms, now)


def locate(policy: Policy, resource: str) -> tuple[str, str]:
    """`s3://bucket/prefix`, or the name of a policy resource that has exactly one path."""
    text = resource.strip()
    if not text.startswith("s3://"):
        named = policy.resource(text)
        if named is None:
            known = ", ".join(r.name for r in policy.resources) or "none"
            raise Invalid(
                "invalid_resource",
                f"unknown resource {resource!r}: name one of the policy's resources ({known}) "
                "or give s3://bucket/prefix",
            )
        if len(named.paths) != 1:
            paths = ", ".join(str(p) for p in named.paths)
            raise Invalid("ambiguous_resource", f"{named.name} has several paths; request one of: {paths}")
        return named.paths[0].bucket, named.paths[0].prefix
    try:
        return parse_resource(text)
    except ValueError as exc:
        raise Invalid("invalid_resource", str(exc)) from None


def wanted_actions(actions: str | Iterable[str | Action]) -> frozenset[Action]:
    values = actions if isinstance(actions, str) else [str(a) for a in actions]
    try:
        return parse_actions(values)
    except ValueError as exc:
        raise Invalid("invalid_actions", str(exc)) from None


def wanted_duration(duration: str | timedelta | None) -> timedelta | None:
    if duration is None or isinstance(duration, timedelta):
        return duration
    if not duration.strip():
        return None
    try:
        return parse_duration(duration)
    except ValueError as exc:
        raise Invalid("invalid_duration", str(exc)) from None


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


HELD_ASKED = "held_principal_asked"
# A scripted thief on hold could ask again every second: the security channel hears of it once in ten
# minutes per person, while every attempt stays in the audit trail, the metric and the webhooks.
HELD_ASKED_REPEAT_AFTER = 600.0


def held_asked(request: AccessRequest, via: Via, since: datetime, now: datetime) -> AnomalyAlert:
    """The alert for a principal on hold who asked to be let in again at once (refused): audited as
    `anomaly.held_principal_asked`, counted, and sent to the security channel and webhooks."""
    return AnomalyAlert(
        kind=HELD_ASKED,
        severity="critical",
        message=(
            f"a suspended principal asked for access again: {request.requester} (on hold since "
            f"{since.isoformat(timespec='seconds')}) asked for {', '.join(request.resources)} via {via}; "
            "refused instant approval"
        ),
        at=now.timestamp(),
        principal=request.requester,
        resource=request.resource_name,
        details={
            "via": via.value,
            "resources": list(request.resources),
            "actions": sorted(a.value for a in request.actions),
            "held_since": since.isoformat(),
            "break_glass": request.break_glass,
            "justification": request.justification,
        },
        response="refused_instant_approval",
        repeat_after=HELD_ASKED_REPEAT_AFTER,
    )
