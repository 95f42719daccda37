"""Slack messages and modals, built with slack-sdk's Block Kit models (pure: no I/O, no clock)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from proxy.access.budgets import Usage, describe
from proxy.access.context import size_text
from proxy.access.durations import format_duration, iso, parse_duration
from proxy.access.grants import Action, Grant, parse_resource
from proxy.access.policy import Policy, Resource, Rule
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.access.reviews import AccessReview
from proxy.access.terms import terms_sha256
from proxy.audit.records import Usage as GrantUsage
from proxy.observe.events import AnomalyAlert

APPROVE = "grantgate_approve"
DENY = "grantgate_deny"
DENY_VIEW = "grantgate_deny_reason"
EXTEND = "grantgate_extend"  # the expiry DM's button: its value is the grant's id
REQUEST_VIEW = "grantgate_request"
# A review reminder's buttons: their value is the review's id.
REVIEW_CONFIRM = "grantgate_review_confirm"
REVIEW_REVOKE = "grantgate_review_revoke"
# block_id / action_id of the request modal's inputs
RESOURCE_BLOCK, RESOURCE_INPUT = "resource", "resource_input"
ACTIONS_BLOCK, ACTIONS_INPUT = "actions", "actions_input"
DURATION_BLOCK, DURATION_INPUT = "duration", "duration_input"
JUSTIFICATION_BLOCK, JUSTIFICATION_INPUT = "justification", "justification_input"
TERMS_BLOCK, TERMS_INPUT = "terms", "terms_input"
REASON_BLOCK, REASON_INPUT = "reason", "reason_input"

DURATION_CHOICES = ("30m", "1h", "2h", "4h", "8h", "1d", "3d", "7d")
_VERDICT = {
    RequestStatus.APPROVED: ":white_check_mark: *Approved*",
    RequestStatus.DENIED: ":no_entry: *Denied*",
    RequestStatus.CANCELLED: ":leftwards_arrow_with_hook: *Cancelled*",
    RequestStatus.EXPIRED: ":hourglass: *Expired*",
}


def esc(text: str) -> str:
    """Slack mrkdwn escaping, so user text cannot forge links or @-mention a channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def actions_text(actions: Iterable[Action]) -> str:
    return ", ".join(sorted(a.value for a in actions))


def _when(moment: datetime | None) -> str:
    return iso(moment) or "never"


# --- the request message in the approvers' channel ---


def request_summary(request: AccessRequest) -> str:
    """The message's notification text (what Slack shows in push notifications and to screen readers)."""
    return (
        f"{request.requester} requests {actions_text(request.actions)} on {request.resource_name} "
        f"for {format_duration(request.duration)}"
    )


def _resources_field(request: AccessRequest) -> str:
    if not request.bundle:
        return f"*Resource*\n{esc(request.resource_name)}: `{esc(request.resource)}`"
    lines = [f"{esc(p.resource_name)}: `{esc(p.resource)}`" for p in request.parts()]
    return "*Resources* (granted together)\n" + "\n".join(lines)


def _request_body(request: AccessRequest) -> list[Block]:
    fields = [
        MarkdownTextObject(text=f"*Requester*\n{esc(request.requester)}"),
        MarkdownTextObject(text=_resources_field(request)),
        MarkdownTextObject(text=f"*Actions*\n{actions_text(request.actions)}"),
        MarkdownTextObject(text=f"*Duration*\n{format_duration(request.duration)}"),
    ]
    if request.starts_at is not None:
        fields.append(MarkdownTextObject(text=f"*Scheduled from*\n{_when(request.starts_at)}"))
    if request.ticket:
        fields.append(MarkdownTextObject(text=f"*Ticket*\n{esc(request.ticket)}"))
    if request.extends is not None:
        fields.append(MarkdownTextObject(text=f"*Extends*\n`{request.extends}` (starts where it ends)"))
    if request.budget is not None:
        fields.append(MarkdownTextObject(text=f"*Budget*\n{describe(request.budget)}"))
    justification = esc(request.justification) or "_none given_"
    blocks: list[Block] = [
        HeaderBlock(text=f"Access request: {request.resource_name}"[:150]),
        SectionBlock(fields=fields),
        SectionBlock(text=MarkdownTextObject(text=f"*Justification*\n>{justification}"[:3000])),
    ]
    if request.terms is not None:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f":scroll: *Dataset terms accepted* by {esc(request.terms.by)} "
                    f"(sha256 `{request.terms.sha256[:12]}`)\n>{esc(request.terms.text)}"[:3000]
                )
            )
        )
    if request.protected:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f":lock: *Protected:* overwriting or deleting in {esc(request.resource_name)} "
                    f"needs {request.approvals_required} distinct approvals, whatever its rule says"
                )
            )
        )
    if request.approvals:
        names = ", ".join(esc(a.approver) for a in request.approvals)
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"*Approvals* {len(request.approvals)} of {request.approvals_required}: {names}"
                )
            )
        )
    return blocks


def _context(request: AccessRequest) -> ContextBlock:
    return ContextBlock(
        elements=[MarkdownTextObject(text=f"Request `{request.id}` · created {_when(request.created_at)}")]
    )


def _context_block(lines: Sequence[str]) -> list[Block]:
    """What the approver needs to decide (proxy/access/context.py describe's lines), as one section."""
    if not lines:
        return []
    text = "*To decide*\n" + "\n".join(esc(line) for line in lines)
    return [SectionBlock(block_id="approver_context", text=MarkdownTextObject(text=text[:3000]))]


def pending_blocks(request: AccessRequest, context: Sequence[str] = ()) -> list[dict[str, Any]]:
    """A pending request with Approve / Deny buttons; the buttons carry the request id. `context`: lines
    describing the requester and the resource (groups, size, past use, access already held)."""
    buttons = ActionsBlock(
        block_id=f"decide:{request.id}",
        elements=[
            ButtonElement(text="Approve", action_id=APPROVE, value=request.id, style="primary"),
            ButtonElement(text="Deny", action_id=DENY, value=request.id, style="danger"),
        ],
    )
    return _dicts([*_request_body(request), *_context_block(context), buttons, _context(request)])


def decided_blocks(request: AccessRequest) -> list[dict[str, Any]]:
    """The same message once decided: no buttons, who decided and why."""
    verdict = _VERDICT.get(request.status, f"*{request.status.value}*")
    who = f" by {esc(request.decided_by)}" if request.decided_by else ""
    why = f": {esc(request.decision_comment)}" if request.decision_comment else ""
    line = f"{verdict}{who} at {_when(request.decided_at)}{why}"
    return _dicts(
        [*_request_body(request), SectionBlock(text=MarkdownTextObject(text=line)), _context(request)]
    )


def message_blocks(request: AccessRequest, context: Sequence[str] = ()) -> list[dict[str, Any]]:
    if request.status is RequestStatus.PENDING:
        return pending_blocks(request, context)
    return decided_blocks(request)


# --- direct messages ---


def decision_dm(request: AccessRequest, grant: Grant | None) -> str:
    what = f"{actions_text(request.actions)} on {request.resource_name} (`{esc(request.resource)}`)"
    who = esc(request.decided_by or "someone")
    why = f": {esc(request.decision_comment)}" if request.decision_comment else ""
    if request.status is RequestStatus.APPROVED:
        until = f", until {_when(grant.expires_at)}" if grant is not None else ""
        return (
            f":white_check_mark: Your request for {what} was approved by {who}{why}. "
            f"You have access for {format_duration(request.duration)}{until}."
        )
    if request.status is RequestStatus.DENIED:
        return f":no_entry: Your request for {what} was denied by {who}{why}."
    if request.status is RequestStatus.EXPIRED:
        return f":hourglass: Your request for {what} expired without a decision{why}."
    return f"Your request for {what} is now {request.status.value}{why}."


def expiring_dm(grant: Grant, reason: str) -> str:
    return (
        f":alarm_clock: Your access to `{esc(grant.resource)}` ({actions_text(grant.actions)}) {esc(reason)} "
        f"(at {_when(grant.expires_at)}). Request it again with `/grantgate` if you still need it."
    )


def expiring_dm_blocks(grant: Grant, reason: str, by: timedelta) -> list[dict[str, Any]]:
    """The expiry warning with a button asking to extend the grant by `by` (the policy decides)."""
    button = ButtonElement(
        text=f"Extend by {format_duration(by)}", action_id=EXTEND, value=grant.id, style="primary"
    )
    return _dicts(
        [
            SectionBlock(text=MarkdownTextObject(text=expiring_dm(grant, reason))),
            ActionsBlock(block_id=f"extend:{grant.id}", elements=[button]),
        ]
    )


def review_text(review: AccessReview, *, holder: bool, final: bool, use: GrantUsage | None = None) -> str:
    """A review reminder: to the holder (someone will look at your access) or to the reviewers, who
    see the holder's `use` over the period under review."""
    deadline = _when(review.deadline)
    last = ":warning: *Last reminder.* " if final else ""
    if holder:
        return (
            f"{last}:mag: Your standing access to `{esc(review.resource)}` is up for its periodic review "
            f"(held since {_when(review.period_start)}). Unless a reviewer confirms it by {deadline}, it is "
            "revoked."
        )
    return (
        f"{last}:mag: *Access review*: {esc(review.principal)} has held `{esc(review.resource)}` since "
        f"{_when(review.period_start)}.{_review_use(use)} Confirm or revoke by {deadline}; undecided, it "
        "is revoked."
    )


def _review_use(use: GrantUsage | None) -> str:
    if use is None:
        return ""
    if not use.requests:
        return " Unused this period."
    objects = f"{use.objects_read} object{'' if use.objects_read == 1 else 's'}"
    requests = f"{use.requests} request{'' if use.requests == 1 else 's'}"
    return (
        f" This period: {size_text(use.bytes_read)} read in {objects}, {requests}, "
        f"last used {_when(use.last_used_at)}."
    )


def review_blocks(review: AccessReview, text: str) -> list[dict[str, Any]]:
    """The reviewers' reminder with Confirm and Revoke buttons."""
    buttons = [
        ButtonElement(text="Confirm", action_id=REVIEW_CONFIRM, value=review.id, style="primary"),
        ButtonElement(text="Revoke", action_id=REVIEW_REVOKE, value=review.id, style="danger"),
    ]
    return _dicts(
        [
            SectionBlock(text=MarkdownTextObject(text=text)),
            ActionsBlock(block_id=f"review:{review.id}", elements=buttons),
        ]
    )


def review_revoked_dm(review: AccessReview, reason: str) -> str:
    return f":lock: Your access to `{esc(review.resource)}` was revoked: {esc(reason)}."


def expired_dm(grant: Grant) -> str:
    return (
        f":lock: Your access to `{esc(grant.resource)}` ({actions_text(grant.actions)}) has expired. "
        "Request it again with `/grantgate` if you still need it."
    )


def denied_dm(principal: str, action: str, resource: str, url: str) -> str:
    return (
        f":wave: {esc(principal)}, GrantGate refused {esc(action)} on `{esc(resource)}`: you have no active "
        f"grant for it. Request access with `/grantgate` or at <{url}|this link>."
    )


def grants_text(
    principal: str, grants: Sequence[Grant], now: datetime, usage: Mapping[str, Usage] | None = None
) -> str:
    """`usage`: what each budgeted grant has moved so far, shown against its budget."""
    if not grants:
        return f"{esc(principal)} has no active grants. Request access with `/grantgate`."
    lines = [f"*Active grants of {esc(principal)}*"]
    for g in sorted(grants, key=lambda g: (g.expires_at is None, g.expires_at or now)):
        left = "no expiry" if g.expires_at is None else f"{format_duration(g.expires_at - now)} left"
        used = "" if g.budget is None else f" · budget {describe(g.budget, (usage or {}).get(g.id, Usage()))}"
        spent = " (spent)" if g.spent else ""
        lines.append(f"• `{esc(g.resource)}` {actions_text(g.actions)} ({left}){used}{spent} · `{g.id}`")
    return "\n".join(lines)


# --- security channel ---


def break_glass_text(request: AccessRequest, grant: Grant) -> str:
    return (
        f":rotating_light: *Break-glass* by {esc(request.requester)}: {actions_text(grant.actions)} on "
        f"`{esc(grant.resource)}` until {_when(grant.expires_at)}. Reason: {esc(request.justification)}. "
        f"Review it: request `{request.id}`."
    )


def anomaly_text(alert: AnomalyAlert) -> str:
    icon = ":rotating_light:" if alert.severity == "critical" else ":warning:"
    parts = [f"{icon} *Anomaly* `{esc(alert.kind)}` ({esc(alert.severity)}): {esc(alert.message)}"]
    for label, value in (
        ("principal", alert.principal),
        ("resource", alert.resource),
        ("grant", alert.grant_id),
        ("source", alert.source_ip),
        ("response", alert.response),
    ):
        if value:
            parts.append(f"{label}: `{esc(value)}`")
    return " · ".join(parts)


# --- modals ---


def _resource_option(resource: Resource) -> list[Option]:
    # A resource with one path is requested by name; several paths are offered one by one.
    if len(resource.paths) == 1:
        return [Option(value=resource.name, label=resource.name[:75])]
    return [Option(value=str(p), label=f"{resource.name}: {p}"[:75]) for p in resource.paths]


def duration_choices(longest: timedelta) -> list[str]:
    fitting = [c for c in DURATION_CHOICES if parse_duration(c) <= longest]
    return fitting or [format_duration(longest)]


def request_modal(requestable: Sequence[tuple[Resource, Rule]]) -> dict[str, Any]:
    """The `/grantgate` modal: resource and duration as choices, actions, and a justification."""
    resources = [o for resource, _rule in requestable for o in _resource_option(resource)][:100]
    longest = max((rule.max_duration for _r, rule in requestable), default=timedelta(hours=1))
    actions = sorted({a for _r, rule in requestable for a in rule.actions}, key=lambda a: a.value)
    action_options = [Option(value=a.value, label=a.value) for a in actions]
    initial = [o for o in action_options if o.value in ("read", "list")] or action_options[:1]
    durations = [Option(value=c, label=c) for c in duration_choices(longest)]
    view = View(
        type="modal",
        callback_id=REQUEST_VIEW,
        title="Request access",
        submit="Request",
        close="Cancel",
        blocks=[
            InputBlock(
                block_id=RESOURCE_BLOCK,
                label="Resource",
                element=StaticSelectElement(action_id=RESOURCE_INPUT, options=resources),
            ),
            InputBlock(
                block_id=ACTIONS_BLOCK,
                label="Actions",
                element=CheckboxesElement(
                    action_id=ACTIONS_INPUT, options=action_options, initial_options=initial
                ),
            ),
            InputBlock(
                block_id=DURATION_BLOCK,
                label="Duration",
                element=StaticSelectElement(
                    action_id=DURATION_INPUT, options=durations, initial_option=durations[0]
                ),
            ),
            InputBlock(
                block_id=JUSTIFICATION_BLOCK,
                label="Justification",
                element=PlainTextInputElement(action_id=JUSTIFICATION_INPUT, multiline=True, max_length=2000),
                hint="What you need it for; approvers read this.",
            ),
            *_terms_blocks([resource for resource, _rule in requestable]),
        ],
    )
    return view.to_dict()


def _terms_blocks(resources: Sequence[Resource]) -> list[Block]:
    """Each resource's dataset terms, and a box per resource to accept them: its value carries the hash
    of the text shown, so a submission accepts exactly what the modal displayed."""
    with_terms = [r for r in resources if r.terms][:10]
    if not with_terms:
        return []
    shown: list[Block] = [
        SectionBlock(
            text=MarkdownTextObject(text=f"*Dataset terms of {esc(r.name)}*\n>{esc(r.terms)}"[:3000])
        )
        for r in with_terms
    ]
    boxes = [
        Option(value=f"{r.name} {terms_sha256(r.terms)}", label=f"I accept the terms of {r.name}"[:75])
        for r in with_terms
    ]
    return [
        *shown,
        InputBlock(
            block_id=TERMS_BLOCK,
            label="Dataset terms",
            optional=True,  # only the resources above need it; the workflow refuses a missing one
            element=CheckboxesElement(action_id=TERMS_INPUT, options=boxes),
            hint="Recorded with the grant and in the audit log.",
        ),
    ]


def accepted_terms(policy: Policy, requested: str, ticked: Sequence[str]) -> str:
    """The hash the modal's ticked boxes accept for the requested resource option ("" if none)."""
    resource = policy.resource(requested)
    if requested.startswith("s3://"):
        with contextlib.suppress(ValueError):
            matched = policy.match(*parse_resource(requested))
            resource = matched[0] if matched else None
    for value in ticked:
        name, _, digest = value.partition(" ")
        if resource is not None and name == resource.name:
            return digest
    return ""


def deny_modal(request: AccessRequest, private_metadata: str) -> dict[str, Any]:
    view = View(
        type="modal",
        callback_id=DENY_VIEW,
        title="Deny request",
        submit="Deny",
        close="Cancel",
        private_metadata=private_metadata,
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=request_summary(request))),
            InputBlock(
                block_id=REASON_BLOCK,
                label="Reason (shown to the requester)",
                element=PlainTextInputElement(action_id=REASON_INPUT, multiline=True, max_length=500),
            ),
        ],
    )
    return view.to_dict()


def _dicts(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    return [b.to_dict() for b in blocks]
