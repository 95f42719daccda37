"""Extending a grant: a request for more time on a grant already held, decided by the policy as a new
request would be (the rules are in proxy/access/extensions.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from proxy.access import policy as rules
from proxy.access.events import RequestCreated
from proxy.access.extensions import Extension, plan, reworded
from proxy.access.grants import Grant
from proxy.access.policy import Ask, Instant, NeedsApproval, Rejected
from proxy.access.requests import AccessRequest, RequestStatus, Via
from proxy.access.terms import accepted
from proxy.identity.principals import Principal
from proxy.store.workflow import new_request_id
from proxy.workflow.errors import Conflict, Forbidden, NotFound, refusal, terms_refusal
from proxy.workflow.requests import wanted_duration
from proxy.workflow.service import Outcome, Workflow

# A chain of extensions longer than this is not followed further back (its start is then the oldest
# grant reached): the policy's maximum bounds real chains long before.
_MAX_CHAIN = 100


async def extend_grant(
    workflow: Workflow,
    grant_id: str,
    holder: Principal,
    by: str | timedelta,
    justification: str = "",
    *,
    via: Via = Via.API,
) -> Outcome:
    """Ask for `by` more on `grant_id`, starting where it ends. Granted at once, pending approval, or
    refused with a WorkflowError, exactly as `request_access` decides a new request."""
    grant = await workflow.store.get_grant(grant_id)
    if grant is None or not rules.may_view_grant(workflow.policy, grant, holder):
        raise NotFound("not_found", f"no grant {grant_id}")
    lifetime = wanted_duration(by)
    if lifetime is None:
        raise refusal(Rejected("invalid_duration", "say how much longer, e.g. --by 2h"))
    now = workflow.now()
    began = await _chain_start(workflow, grant)
    extension = plan(grant, lifetime, began, holder.name, now)
    if isinstance(extension, Rejected):
        if extension.code == "not_yours":
            raise Forbidden(extension.code, extension.message)
        if extension.code == "grant_ended":
            raise Conflict(extension.code, extension.message)
        raise refusal(extension)
    requester = await workflow.principal(holder.name) or holder
    ask = Ask(requester, grant.bucket, grant.prefix, grant.actions, extension.span, justification.strip())
    evaluation = rules.evaluate(workflow.policy, ask)
    if isinstance(evaluation, Rejected):
        raise refusal(reworded(evaluation, extension, _maximum(workflow, grant, requester)))
    # An extension goes on under the terms its grant was taken under; if they changed since, it is a
    # new request (with a new acknowledgement), not an extension.
    terms = grant.terms if evaluation.resource.terms else None
    if evaluation.resource.terms and not (terms and accepted(evaluation.resource.terms, terms.sha256)):
        raise terms_refusal(evaluation.resource, terms.sha256 if terms else "-")
    request = replace(_extension_request(workflow, extension, evaluation, ask, now), terms=terms)
    if isinstance(evaluation, Instant):
        return await workflow.access_requests.grant_now(request, evaluation, (), via=via)
    stored = await workflow.requests.insert_request(request)
    workflow.ctx.emit(RequestCreated(now, requester.name, stored.justification, stored))
    waiting = (
        f"extension of {grant.id} waiting for {evaluation.approvals_required} approval(s) from "
        f"{', '.join(sorted(evaluation.rule.approver_groups))}; the grant stays in force until "
        f"{grant.expires_at.isoformat(timespec='minutes') if grant.expires_at else 'it ends'}"
    )
    return Outcome(stored, None, (), waiting)


def _extension_request(
    workflow: Workflow, extension: Extension, evaluation: Instant | NeedsApproval, ask: Ask, now: datetime
) -> AccessRequest:
    grant = extension.grant
    return AccessRequest(
        id=new_request_id(),
        requester=grant.principal,
        resource_name=evaluation.resource.name,
        bucket=grant.bucket,
        prefix=grant.prefix,
        actions=grant.actions,
        duration=extension.by,
        justification=ask.justification,
        status=RequestStatus.PENDING,
        created_at=now,
        expires_at=now + workflow.policy.pending_ttl,
        approvals_required=evaluation.approvals_required if isinstance(evaluation, NeedsApproval) else 0,
        protected=isinstance(evaluation, NeedsApproval) and evaluation.protected,
        source_cidrs=evaluation.rule.source_cidrs,
        starts_at=extension.starts_at,
        extends=grant.id,
        budget=rules.granted_budget(evaluation.rule, None),  # as a new request naming none gets
    )


async def _chain_start(workflow: Workflow, grant: Grant) -> datetime:
    """When access began: the grant's start, or that of the first grant its extensions go back to."""
    first = (await workflow.ctx.chain(grant, _MAX_CHAIN))[-1]
    return first.starts_at or first.created_at


def _maximum(workflow: Workflow, grant: Grant, requester: Principal) -> timedelta | None:
    matched = workflow.policy.match(grant.bucket, grant.prefix)
    if matched is None:
        return None
    rule = rules.select_rule(workflow.policy, matched[0], requester, grant.actions)
    return None if isinstance(rule, Rejected) else rule.max_duration
