"""The Slack side of notifications: posts requests to approvers' channels, DMs requesters, alerts security.

An EventBus observer: `__call__` only queues; one worker talks to Slack in order (a request is posted
before its message can be updated), so Slack being slow or down never slows the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from proxy.access.events import (
    ApprovalRecorded,
    BreakGlassUsed,
    GrantExpired,
    GrantExpiring,
    RequestCreated,
    RequestDecided,
    ReviewDecided,
    ReviewDue,
)
from proxy.access.extensions import offered
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.access.reviews import AccessReview, ReviewStatus
from proxy.audit.records import Usage as GrantUsage
from proxy.notify import blocks
from proxy.notify.counters import Outcomes
from proxy.notify.settings import SlackSettings
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.store.messages import SlackMessages

log = structlog.get_logger("grantgate.slack")

QUEUE_LIMIT = 5_000
BINDING_TTL_SECONDS = 300.0
POLICY_ACTOR = "policy"  # the workflow's actor for instant decisions: nobody to tell but the requester
Job = Callable[[], Awaitable[object]]  # a Slack call; what it answers is not used
_ENDED = (ReviewStatus.REVOKED, ReviewStatus.MISSED)  # reviews whose holder lost access


# --- binding Slack users to principals (pure) -----------------------------------------------------


def principal_from_email(email: str, mode: str, domains: list[str]) -> str | None:
    address = email.strip().lower()
    local, at, domain = address.partition("@")
    if not at or not local or not domain:
        return None
    if domains and domain not in domains:
        return None
    if mode == "email":
        return address
    if mode == "local_part":
        return local
    return None


def email_for_principal(principal: str, mode: str, domains: list[str]) -> str | None:
    if mode == "email" and "@" in principal:
        return principal
    if mode == "local_part" and domains and "@" not in principal:
        return f"{principal}@{domains[0]}"
    return None


def verified_email(user: dict[str, Any]) -> str | None:
    """The email Slack vouches for, or None for bots, deactivated and unconfirmed accounts."""
    if user.get("deleted") or user.get("is_bot") or not user.get("is_email_confirmed"):
        return None
    email = (user.get("profile") or {}).get("email")
    return email if isinstance(email, str) and email else None


@dataclass
class RepeatLimiter:
    """One message per (principal, subject) per interval: a "you were denied" DM per principal and
    area; a repeatable alert per principal and kind (its own interval)."""

    interval: float
    last: dict[tuple[str, str], float]

    def allow(self, principal: str, resource: str, now: float, interval: float | None = None) -> bool:
        key = (principal, resource)
        seen = self.last.get(key)
        if seen is not None and now - seen < (self.interval if interval is None else interval):
            return False
        self.last[key] = now
        if len(self.last) > 10_000:  # forget the oldest rather than grow without bound
            for stale in sorted(self.last, key=self.last.__getitem__)[:5_000]:
                del self.last[stale]
        return True


def denial_area(event: RequestEvent) -> str:
    """What the denial DM is rate-limited by: the bucket and the key's first path segment.

    A client walking thousands of keys under `models/` earns one DM, not thousands; a denial under
    another top-level prefix (usually another resource) gets its own.
    """
    path = event.key if event.key is not None else (event.prefix or "")
    top, slash, _rest = path.partition("/")
    return f"s3://{event.bucket}/{top}{slash}"


def request_link(public_url: str, event: RequestEvent) -> tuple[str, str]:
    """(resource, link) the way the gateway's 403 names them."""
    resource = f"s3://{event.bucket}" + (f"/{event.key}" if event.key else "")
    if event.key is None and event.prefix:
        resource = f"s3://{event.bucket}/{event.prefix}"
    link = f"{public_url}/request?" + urlencode({"resource": resource, "action": event.action or "read"})
    return resource, link


# --- the notifier ---------------------------------------------------------------------------------


class SlackNotifier:
    def __init__(
        self,
        settings: SlackSettings,
        public_url: str,
        outcomes: Outcomes,
        messages: SlackMessages,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.public_url = public_url
        self.outcomes = outcomes
        self.clock = clock
        self.client = AsyncWebClient(
            token=settings.token(), base_url=settings.api_url, timeout=int(settings.timeout_seconds)
        )
        # Where each request's message is, shared by every gateway: a decision made anywhere updates it.
        self.messages = messages
        self.denials = RepeatLimiter(settings.denial_dm_interval_seconds, {})
        self.repeated_alerts = RepeatLimiter(0.0, {})  # each alert says how often it may be posted
        self.queue: asyncio.Queue[Job] = asyncio.Queue(QUEUE_LIMIT)
        self._bindings: dict[str, tuple[str | None, float]] = {}
        self._users: dict[str, str] = {}
        self._worker: asyncio.Task[None] | None = None
        # What the approver sees next to a pending request (control/approver_context.py), set by the
        # control plane that owns the bucket listing and the usage views; None: the card goes without it.
        self.describe: Callable[[AccessRequest], Awaitable[list[str]]] | None = None

    # --- observing ---

    def __call__(self, event: Any) -> None:
        match event:
            case RequestCreated(request=request) if request.status is RequestStatus.PENDING:
                self._queue(lambda: self.post_request(request))
            case ApprovalRecorded(request=request) if request.status is RequestStatus.PENDING:
                self._queue(lambda: self.refresh_message(request))
            case RequestDecided(request=request):
                self._queue(lambda: self.refresh_message(request))
                if self._tell_requester(request):
                    self._queue(lambda: self.dm(request.requester, blocks.decision_dm(request, None)))
            case GrantExpiring(grant=grant, reason=reason) if grant.expires_at is not None:
                offer = blocks.expiring_dm_blocks(grant, reason, offered(grant))
                self._queue(lambda: self.dm(grant.principal, blocks.expiring_dm(grant, reason), offer))
            case GrantExpired(grant=grant) if grant.expires_at is not None:
                self._queue(lambda: self.dm(grant.principal, blocks.expired_dm(grant)))
            case ReviewDue(review=review, final=final, use=use):
                holder = blocks.review_text(review, holder=True, final=final)
                self._queue(lambda: self.dm(review.principal, holder))
                self._queue(lambda: self.post_review(review, final, use))
            case ReviewDecided(review=review, reason=reason) if review.status in _ENDED:
                self._queue(lambda: self.dm(review.principal, blocks.review_revoked_dm(review, reason)))
            case BreakGlassUsed(request=request, grant=grant):
                self._queue(lambda: self.to_security(blocks.break_glass_text(request, grant)))
            case AnomalyAlert():
                if self.repeated_alerts.allow(
                    event.principal or "", event.kind, self.clock(), interval=event.repeat_after
                ):
                    self._queue(lambda: self.to_security(blocks.anomaly_text(event)))
            case RequestEvent(decision="deny", reason="AccessDenied", principal=str() as who) if event.bucket:
                resource, link = request_link(self.public_url, event)
                if self.denials.allow(who, denial_area(event), self.clock()):
                    text = blocks.denied_dm(who, event.action or "access", resource, link)
                    self._queue(lambda: self.dm(who, text))

    @staticmethod
    def _tell_requester(request: AccessRequest) -> bool:
        if request.status is RequestStatus.CANCELLED:
            return False  # they did it themselves
        return request.decided_by not in (POLICY_ACTOR, request.requester)

    def _queue(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.outcomes.inc("slack", "dropped")
            log.error("slack_notification_dropped", queued=self.queue.qsize())

    # --- lifecycle ---

    def start(self) -> None:
        # One connection pool for every call (slack-sdk otherwise opens a session per call).
        self.client.session = aiohttp.ClientSession()
        self._worker = asyncio.create_task(self._work(), name="slack-notifier")

    async def drain(self, seconds: float = 5.0) -> None:
        """Wait (bounded) until everything queued so far was sent or failed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), seconds)

    async def close(self) -> None:
        await self.drain(2.0)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self.client.session is not None:
            await self.client.session.close()

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self.run(job)
            finally:
                self.queue.task_done()

    async def run(self, job: Job) -> bool:
        """Run one Slack call, logging and counting a failure instead of raising it."""
        try:
            await job()
        except SlackApiError as exc:
            self.outcomes.inc("slack", "failed")
            log.error("slack_call_failed", error=exc.response.get("error", "unknown"))
            return False
        except (SlackClientError, OSError, TimeoutError) as exc:
            self.outcomes.inc("slack", "failed")
            log.error("slack_call_failed", error=repr(exc))
            return False
        self.outcomes.inc("slack", "ok")
        return True

    # --- what is said where ---

    async def post_request(self, request: AccessRequest) -> None:
        channel = self.settings.channel_for(request.resource_name)
        if not channel:
            log.warning("slack_no_channel", resource=request.resource_name, request_id=request.id)
            return
        resp = await self.client.chat_postMessage(
            channel=channel,
            text=blocks.request_summary(request),
            blocks=blocks.message_blocks(request, await self._context(request)),
        )
        await self.messages.remember(request.id, str(resp["channel"]), str(resp["ts"]))

    async def post_review(self, review: AccessReview, final: bool, use: GrantUsage | None = None) -> None:
        """The reviewers' reminder, with Confirm / Revoke, in the channel of the resource's requests."""
        channel = self.settings.channel_for(review.resource_name)
        if not channel:
            log.warning("slack_no_channel", resource=review.resource_name, review_id=review.id)
            return
        text = blocks.review_text(review, holder=False, final=final, use=use)
        await self.client.chat_postMessage(
            channel=channel, text=text, blocks=blocks.review_blocks(review, text)
        )

    async def refresh_message(self, request: AccessRequest) -> None:
        where = await self.messages.find(request.id)
        if where is None:
            return  # never posted (no channel for its resource, Slack was down), or settled already
        channel, ts = where
        await self.client.chat_update(
            channel=channel,
            ts=ts,
            text=blocks.request_summary(request),
            blocks=blocks.message_blocks(request, await self._context(request)),
        )
        if request.status is not RequestStatus.PENDING:
            await self.messages.forget(request.id)

    async def _context(self, request: AccessRequest) -> list[str]:
        if self.describe is None or request.status is not RequestStatus.PENDING:
            return []
        try:
            return await self.describe(request)
        except Exception as exc:
            # The card matters more than its context: post it without.
            log.warning("slack_context_failed", request_id=request.id, error=repr(exc))
            return []

    async def to_security(self, text: str) -> None:
        if not self.settings.security_channel:
            log.warning("slack_no_security_channel")
            return
        await self.client.chat_postMessage(channel=self.settings.security_channel, text=text)

    async def dm(self, principal: str, text: str, message: list[dict[str, Any]] | None = None) -> None:
        user = await self.user_for(principal)
        if user is None:
            log.info("slack_no_user_for_principal", principal=principal)
            return
        await self.dm_user(user, text, message)

    async def dm_user(self, user_id: str, text: str, message: list[dict[str, Any]] | None = None) -> None:
        opened = await self.client.conversations_open(users=user_id)
        channel = str(opened["channel"]["id"])
        await self.client.chat_postMessage(channel=channel, text=text, blocks=message)

    # --- who is who ---

    async def principal_for(self, user_id: str) -> str | None:
        """The principal a Slack user acts as: the explicit mapping, else their Slack-verified email."""
        mapped = self.settings.users.get(user_id)
        if mapped is not None:
            return mapped
        if not self.settings.email_principal:
            return None
        cached = self._bindings.get(user_id)
        now = self.clock()
        if cached is not None and now - cached[1] < BINDING_TTL_SECONDS:
            return cached[0]
        resp = await self.client.users_info(user=user_id)
        email = verified_email(resp.get("user") or {})
        name = (
            principal_from_email(email, self.settings.email_principal, self.settings.email_domains)
            if email
            else None
        )
        self._bindings[user_id] = (name, now)
        return name

    async def user_for(self, principal: str) -> str | None:
        for uid, name in self.settings.users.items():
            if name == principal:
                return uid
        if principal in self._users:
            return self._users[principal]
        email = email_for_principal(principal, self.settings.email_principal, self.settings.email_domains)
        if email is None:
            return None
        try:
            resp = await self.client.users_lookupByEmail(email=email)
        except SlackApiError as exc:
            if exc.response.get("error") == "users_not_found":
                return None
            raise
        user = resp.get("user") or {}
        # The reverse lookup must agree with the forward one, or a look-alike account gets the DM.
        if verified_email(user) is None or not user.get("id"):
            return None
        self._users[principal] = str(user["id"])
        return self._users[principal]
