"""Bundles: one request for several resources (a model and its eval set). Each resource's own rule must
be satisfied, approvers see one request, and the grants are created together or not at all (one store
transaction; see WorkflowStore._insert_grants)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from proxy.access import policy as rules
from proxy.access.events import GrantCreated, RequestCreated
from proxy.access.grants import Action
from proxy.access.policy import Ask, Instant, NeedsApproval, Rejected
from proxy.access.requests import AccessRequest, BundlePart, RequestStatus, Via
from proxy.identity.principals import Principal
from proxy.store.workflow import new_request_id
from proxy.workflow.errors import Invalid, refusal
from proxy.workflow.requests import locate, wanted_actions, wanted_duration
from proxy.workflow.service import POLICY, Outcome, Workflow

MAX_RESOURCES = 20


async def request_bundle(
    workflow: Workflow,
    requester: Principal,
    resources: Sequence[str],
    actions: str | Iterable[str | Action],
    duration: str | timedelta | None = None,
    justification: str = "",
    *,
    ticket: str = "",
    starts_at: datetime | None = None,
    via: Via = Via.API,
) -> Outcome:
    """Ask for every resource in `resources` at once; one resource is an ordinary request."""
    if not resources:
        raise Invalid("invalid_resource", "name at least one resource")
    if len(resources) > MAX_RESOURCES:
        raise Invalid("invalid_resource", f"a bundle holds at most {MAX_RESOURCES} resources")
    if len(resources) == 1:
        return await workflow.request_access(
            requester,
            resources[0],
            actions,
            duration,
            justification,
            ticket=ticket,
            starts_at=starts_at,
            via=via,
        )
    # The same parsing and checks as a single request, one resource at a time.
    wanted = wanted_actions(actions)
    lifetime = wanted_duration(duration)
    policy = workflow.policy
    parts: list[tuple[str, str, Instant | NeedsApproval]] = []
    for text in resources:
        bucket, prefix = locate(workflow.policy, text)
        prefix = policy.canonical_prefix(bucket, prefix)
        ask = Ask(requester, bucket, prefix, wanted, lifetime, justification.strip(), False, ticket.strip())
        evaluation = rules.evaluate(policy, ask)
        if isinstance(evaluation, Rejected):
            raise refusal(Rejected(evaluation.code, f"{text.strip()}: {evaluation.message}"))
        if evaluation.rule.budget is not None or evaluation.rule.max_budget is not None:
            # One request carries one budget: a budgeted resource is asked for on its own.
            raise Invalid("budgeted_resource", f"{text.strip()} has a budget: request it on its own")
        if evaluation.resource.terms:
            # One request carries one acknowledgement: a resource with dataset terms is asked for alone.
            raise Invalid("terms_resource", f"{text.strip()} has dataset terms: request it on its own")
        if any((bucket, prefix) == (b, p) for b, p, _ in parts):
            raise Invalid("duplicate_resource", f"{text.strip()} is named twice in the bundle")
        parts.append((bucket, prefix, evaluation))
    now = workflow.now()
    if starts_at is not None and starts_at.tzinfo is None:
        raise Invalid("invalid_starts_at", "starts_at needs a time zone, e.g. 2025-06-01T22:00:00Z")
    waiting = [e for _, _, e in parts if isinstance(e, NeedsApproval)]
    (bucket, prefix, lead), rest = parts[0], parts[1:]
    request = AccessRequest(
        id=new_request_id(),
        requester=requester.name,
        resource_name=lead.resource.name,
        bucket=bucket,
        prefix=prefix,
        actions=wanted,
        # Without a duration each rule offers its default: the shortest is within every maximum.
        duration=min(e.duration for _, _, e in parts),
        justification=justification.strip(),
        status=RequestStatus.PENDING,
        created_at=now,
        expires_at=now + policy.pending_ttl,
        approvals_required=max((e.approvals_required for e in waiting), default=0),
        protected=any(e.protected for e in waiting),
        source_cidrs=lead.rule.source_cidrs,
        starts_at=starts_at if starts_at is not None and starts_at > now else None,
        ticket=ticket.strip(),
        bundle=tuple(BundlePart(e.resource.name, b, p) for b, p, e in rest),
    )
    if not waiting:
        assert isinstance(lead, Instant)
        outcome = await workflow.access_requests.grant_now(request, lead, (), via=via)  # as one request is
        for grant_id in outcome.request.grant_ids[1:]:  # the first is announced by grant_now
            grant = await workflow.store.get_grant(grant_id)
            if grant is not None:
                workflow.ctx.emit(GrantCreated(now, POLICY, outcome.request.decision_comment, grant))
        return outcome
    stored = await workflow.requests.insert_request(request)
    workflow.ctx.emit(RequestCreated(now, requester.name, stored.justification, stored))
    groups = sorted({g for e in waiting for g in e.rule.approver_groups})
    message = (
        f"{len(parts)} resources in one request, granted together: waiting for "
        f"{request.approvals_required} approval(s) from {', '.join(groups)}"
    )
    return Outcome(stored, None, (), message)
