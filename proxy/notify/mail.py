"""Email notifications over SMTP: new requests to their approvers' lists, decisions to requesters, expiry
warnings to holders, review reminders to holders and reviewers' lists. An observer of workflow events;
sending runs off the event loop, and a failure is logged and counted, never raised into the workflow."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage

import structlog

from proxy.access.durations import format_duration
from proxy.access.events import GrantExpiring, RequestCreated, RequestDecided, ReviewDecided, ReviewDue
from proxy.access.policy import Policy
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.access.reviews import AccessReview, ReviewStatus
from proxy.notify.counters import Outcomes
from proxy.notify.mail_settings import EmailSettings

log = structlog.get_logger("grantgate.email")

POLICY_ACTOR = "policy"


def request_mail(request: AccessRequest, public_url: str) -> tuple[str, str]:
    """(subject, body) of a new request, for its approvers (pure)."""
    resources = "\n".join(f"  {r}" for r in request.resources)
    lines = [
        f"{request.requester} asks for {', '.join(sorted(a.value for a in request.actions))} "
        f"for {format_duration(request.duration)} on:",
        resources,
        "",
        f"Justification: {request.justification or '-'}",
    ]
    if request.ticket:
        lines.append(f"Ticket: {request.ticket}")
    if request.extends:
        lines.append(f"Extends grant {request.extends}, starting where it ends.")
    lines += ["", f"Decide in the inbox: {public_url}/inbox (request {request.id})."]
    return f"[GrantGate] {request.requester} requests {request.resource_name}", "\n".join(lines)


def decision_mail(request: AccessRequest) -> tuple[str, str]:
    comment = f": {request.decision_comment}" if request.decision_comment else ""
    subject = f"[GrantGate] Your request {request.id} was {request.status.value}"
    return subject, f"Your request for {', '.join(request.resources)} was {request.status.value} by " + (
        f"{request.decided_by or 'someone'}{comment}."
    )


def review_mail(review: AccessReview, reason: str, final: bool, public_url: str) -> tuple[str, str]:
    """To the holder and the reviewers' lists: who holds what since when, and what happens if nobody acts."""
    last = "Last reminder: " if final else ""
    subject = f"[GrantGate] {last}review {review.principal}'s access to {review.resource}"
    body = (
        f"{review.principal} has held {review.resource} (grant {review.grant_id}) since "
        f"{review.period_start.isoformat(timespec='minutes')}. Reviewers: {reason}.\n\n"
        f"Review it on {public_url}/reviews or with `grantgate reviews confirm {review.id}` / "
        f"`grantgate reviews revoke {review.id}`."
    )
    return subject, body


class EmailNotifier:
    def __init__(self, settings: EmailSettings, policy: Policy, public_url: str, outcomes: Outcomes) -> None:
        self.settings = settings
        self.policy = policy
        self.public_url = public_url
        self.outcomes = outcomes
        self._sending: set[asyncio.Task[None]] = set()

    def __call__(self, event: object) -> None:
        match event:
            case RequestCreated(request=request) if request.status is RequestStatus.PENDING:
                self._send(self._approver_lists(request), *request_mail(request, self.public_url))
            case RequestDecided(request=request) if request.decided_by not in (
                POLICY_ACTOR,
                request.requester,
            ):
                self._send([self.settings.address_of(request.requester)], *decision_mail(request))
            case GrantExpiring(grant=grant, reason=reason):
                subject = f"[GrantGate] Your access to {grant.resource} {reason}"
                body = (
                    f"Grant {grant.id} ({grant.resource}) {reason}. Extend it on {self.public_url}/access "
                    f"or with `grantgate extend {grant.id} --by 2h`."
                )
                self._send([self.settings.address_of(grant.principal)], subject, body)
            case ReviewDue(review=review, reviewers=reviewers, final=final, reason=reason):
                subject, body = review_mail(review, reason, final, self.public_url)
                lists = [self.settings.group_addresses.get(g) for g in reviewers]
                self._send([self.settings.address_of(review.principal), *lists], subject, body)
            case ReviewDecided(review=review, reason=reason) if review.status in (
                ReviewStatus.REVOKED,
                ReviewStatus.MISSED,
            ):
                subject = f"[GrantGate] Your access to {review.resource} was revoked"
                body = f"Grant {review.grant_id} ({review.resource}) was revoked: {reason}."
                self._send([self.settings.address_of(review.principal)], subject, body)

    def _approver_lists(self, request: AccessRequest) -> list[str]:
        """The lists of the groups that approve any resource of the request."""
        names = {part.resource_name for part in request.parts()}
        groups = {g for rule in self.policy.rules if rule.resource in names for g in rule.approver_groups}
        return sorted({a for g in groups if (a := self.settings.group_addresses.get(g))})

    def _send(self, to: Sequence[str | None], subject: str, body: str) -> None:
        recipients = [r for r in to if r]
        if not recipients:
            return
        message = EmailMessage()
        message["From"] = self.settings.from_address
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message.set_content(body)
        task = asyncio.get_running_loop().create_task(self._deliver(message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, message: EmailMessage) -> None:
        try:
            await asyncio.to_thread(self._send_now, message)
        except (OSError, smtplib.SMTPException) as exc:
            self.outcomes.inc(self.settings.host, "error")
            log.warning("email_failed", subject=message["Subject"], error=type(exc).__name__)
            return
        self.outcomes.inc(self.settings.host, "sent")

    def _send_now(self, message: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds) as smtp:
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=s.ca_file or None))
            if s.username:
                smtp.login(s.username, s.smtp_password())
            smtp.send_message(message)

    async def close(self) -> None:
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
