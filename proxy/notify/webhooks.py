"""Signed outbound webhooks: one JSON document per event, HMAC-SHA256 signed, retried off the request path.

Receivers verify `X-GrantGate-Signature: t=<unix seconds>,v1=<hex>` where v1 is
HMAC-SHA256(secret, f"{t}.{body}"), and drop deliveries whose `t` is too old (see `verify_signature`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from proxy.access.budgets import Usage
from proxy.access.durations import iso
from proxy.access.events import WorkflowEvent, grant_fields, request_fields, review_fields
from proxy.access.grants import Grant
from proxy.access.requests import AccessRequest
from proxy.access.reviews import AccessReview
from proxy.notify.counters import Outcomes
from proxy.notify.settings import ANOMALY_EVENT, WebhookSettings
from proxy.observe.events import AnomalyAlert
from proxy.store.outbox import StoredDelivery, WebhookOutbox

log = structlog.get_logger("grantgate.webhooks")

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-GrantGate-Signature"
QUEUE_LIMIT = 10_000
WORKERS = 4
# How long the outbox rows a process holds stay its own without renewal (renewed every third of it): a
# process that dies leaves its deliveries to others after at most this long.
LEASE_SECONDS = 60.0


# --- the document (pure) ---------------------------------------------------------------------------


def event_type(event: Any) -> str | None:
    if isinstance(event, WorkflowEvent):
        return event.kind
    if isinstance(event, AnomalyAlert):
        return ANOMALY_EVENT
    return None


def _request_json(request: AccessRequest) -> dict[str, Any]:
    return {
        **request_fields(request),
        "created_at": iso(request.created_at),
        "expires_at": iso(request.expires_at),
        "decided_by": request.decided_by,
        "decided_at": iso(request.decided_at),
        "decision_comment": request.decision_comment,
    }


def _grant_json(grant: Grant, usage: Usage | None) -> dict[str, Any]:
    """`usage`: what the grant's budget had moved when the event happened, for the events that know it
    (grant_budget_spent); null otherwise."""
    return {
        **grant_fields(grant),
        "created_at": iso(grant.created_at),
        "usage": None if usage is None else usage.as_dict(),
    }


def document(event: Any, event_id: str) -> dict[str, Any] | None:
    """The stable webhook body for `event`, or None for events webhooks do not carry.

    Every key is always present (null when it does not apply) so receivers can rely on the shape.
    """
    kind = event_type(event)
    if kind is None:
        return None
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "id": event_id,
        "event": kind,
        "occurred_at": None,
        "actor": None,
        "reason": None,
        "resource": None,
        "request": None,
        "grant": None,
        "alert": None,
        "review": None,
    }
    if isinstance(event, AnomalyAlert):
        occurred = datetime.fromtimestamp(event.at, UTC)
        doc.update(
            occurred_at=iso(occurred),
            actor=event.principal,
            reason=event.message,
            resource={"name": None, "uri": event.resource} if event.resource else None,
            alert=event.as_dict(),
        )
        return doc
    request: AccessRequest | None = getattr(event, "request", None)
    grant: Grant | None = getattr(event, "grant", None)
    doc.update(occurred_at=iso(event.at), actor=event.actor, reason=event.reason)
    if request is not None:
        doc["request"] = _request_json(request)
        doc["resource"] = {"name": request.resource_name, "uri": request.resource}
    review: AccessReview | None = getattr(event, "review", None)
    if review is not None:
        use = getattr(event, "use", None)  # a reminder's: the holder's use over the period so far
        doc["review"] = {
            **review_fields(review),
            "reviewers": list(getattr(event, "reviewers", ())),
            "use": use.as_dict() if use is not None else None,
        }
        doc["resource"] = {"name": review.resource_name, "uri": review.resource}
    if grant is not None:
        doc["grant"] = _grant_json(grant, getattr(event, "usage", None))
        doc["resource"] = doc["resource"] or {"name": None, "uri": grant.resource}
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """What a receiver does: the header parses, is recent, and one v1 matches (constant-time)."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


def backoff(attempt: int, first: float, cap: float) -> float:
    """Delay before attempt `attempt + 1`: first, 2x, 4x, ... capped."""
    return min(cap, first * 2.0 ** (attempt - 1))


def retryable(status: int) -> bool:
    return status >= 500 or status in (408, 425, 429)


# --- delivery (I/O) --------------------------------------------------------------------------------


@dataclass(slots=True)
class Delivery:
    hook: WebhookSettings
    event: str
    event_id: str
    body: bytes
    attempt: int = 1

    @property
    def id(self) -> str:
        """One event to one hook: the outbox row's key."""
        return f"{self.event_id}.{fingerprint(self.hook)[:16]}"


def fingerprint(hook: WebhookSettings) -> str:
    # What the outbox records of a hook: its URL may carry a token, so never the URL itself.
    return hashlib.sha256(hook.url.encode()).hexdigest()


def target_label(url: str) -> str:
    # The host only: webhook URLs often carry a token in their path.
    return urlsplit(url).netloc


class WebhookDispatcher:
    """An EventBus observer: queues one delivery per matching hook; workers send and retry them."""

    def __init__(
        self,
        hooks: list[WebhookSettings],
        outcomes: Outcomes,
        *,
        clock: Callable[[], float] = time.time,
        workers: int = WORKERS,
        outbox: WebhookOutbox | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.hooks = hooks
        self.outcomes = outcomes
        self.clock = clock
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(QUEUE_LIMIT)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._session: aiohttp.ClientSession | None = None
        # With an outbox: every delivery this process holds (queued, in flight or waiting to retry).
        self.outbox = outbox
        self.lease_seconds = lease_seconds
        self.held: dict[str, Delivery] = {}
        self._by_fingerprint = {fingerprint(h): h for h in hooks}
        self._spawned: set[asyncio.Task[None]] = set()

    def __call__(self, event: Any) -> None:
        kind = event_type(event)
        wanting = [h for h in self.hooks if kind is not None and h.wants(kind)]
        if not wanting or kind is None:
            return
        event_id = uuid.uuid4().hex
        doc = document(event, event_id)
        assert doc is not None
        body = encode(doc)
        deliveries = [Delivery(hook, kind, event_id, body) for hook in wanting]
        if self.outbox is None:
            for delivery in deliveries:
                self._enqueue(delivery)
        else:
            task = asyncio.get_running_loop().create_task(self._keep(deliveries))
            self._spawned.add(task)
            task.add_done_callback(self._spawned.discard)

    async def _keep(self, deliveries: list[Delivery]) -> None:
        """Record the deliveries in the outbox, held by this process, then queue them."""
        assert self.outbox is not None
        now = self._now()
        try:
            await self.outbox.add(
                (_stored(d, now) for d in deliveries), now=now, lease_until=self._lease_end(now)
            )
        except Exception as exc:  # the store is away: deliver anyway, only without the safety net
            log.error("webhook_outbox_failed", error=repr(exc), deliveries=len(deliveries))
        else:
            self.held.update((d.id, d) for d in deliveries)
        for delivery in deliveries:
            self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        try:
            self.queue.put_nowait(delivery)
        except asyncio.QueueFull:
            label = target_label(delivery.hook.url)
            if self.held.pop(delivery.id, None) is not None:
                # Kept in the outbox: once its lease lapses a sweep (this process's too) takes it again.
                log.warning("webhook_deferred", url=label, webhook_event=delivery.event)
                return
            self.outcomes.inc(label, "dropped")
            log.error("webhook_dropped", url=label, webhook_event=delivery.event)

    def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._work(), name=f"webhook-{n}") for n in range(self._workers)]
        if self.outbox is not None:
            self._tasks.append(asyncio.create_task(self._tend_outbox(), name="webhook-outbox"))

    async def close(self, drain_seconds: float = 2.0) -> None:
        """Give queued deliveries a moment, then stop. With an outbox, what is left is let go of for the
        next gateway (or this one, restarted) to deliver; without one, it is logged as lost."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), drain_seconds)
        for timer in self._timers:
            timer.cancel()
        for task in [*self._tasks, *self._spawned]:
            task.cancel()
        for task in [*self._tasks, *self._spawned]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = len(self._timers) + self.queue.qsize()
        if self.outbox is not None and self.held:
            try:
                await self.outbox.hold(self.held, self._now())
                log.info("webhooks_handed_over", count=len(self.held))
            except Exception as exc:  # their leases run out instead
                log.warning("webhook_outbox_failed", error=repr(exc), deliveries=len(self.held))
        # Queued while the store could not record them: nothing else will send these.
        if lost := max(0, left - len(self.held)):
            log.warning("webhooks_undelivered_at_shutdown", count=lost)
        if self._session is not None:
            await self._session.close()

    async def _tend_outbox(self) -> None:
        """Renew the leases on what this process holds, and claim what nobody holds any more."""
        assert self.outbox is not None
        while True:
            now = self._now()
            try:
                if self.held:
                    await self.outbox.hold(list(self.held), self._lease_end(now))
                for row in await self.outbox.claim(now=now, lease_until=self._lease_end(now)):
                    await self._resume(row, now)
            except Exception as exc:
                log.warning("webhook_outbox_failed", error=repr(exc))
            await asyncio.sleep(self.lease_seconds / 3)

    async def _resume(self, row: StoredDelivery, now: datetime) -> None:
        assert self.outbox is not None
        if row.id in self.held:  # ours already: the claim only renewed a lease that had lapsed
            return
        hook = self._by_fingerprint.get(row.hook)
        if hook is None:
            log.warning("webhook_dropped_hook_removed", webhook_event=row.event, delivery=row.event_id)
            await self.outbox.done(row.id)
            return
        delivery = Delivery(hook, row.event, row.event_id, row.body, row.attempt)
        self.held[delivery.id] = delivery
        wait = (row.due_at - now).total_seconds()
        if wait > 0:
            self._later(wait, delivery)
        else:
            self._enqueue(delivery)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_seconds)

    async def _finish(self, delivery: Delivery) -> None:
        """Delivered or given up on: out of the outbox."""
        if self.outbox is not None and self.held.pop(delivery.id, None) is not None:
            try:
                await self.outbox.done(delivery.id)
            except Exception as exc:  # it will be delivered again once its lease runs out
                log.warning("webhook_outbox_failed", error=repr(exc), delivery=delivery.event_id)

    async def _work(self) -> None:
        while True:
            delivery = await self.queue.get()
            try:
                await self._attempt(delivery)
            except Exception as exc:  # a worker must survive anything one delivery does
                log.error("webhook_worker_error", error=repr(exc))
            finally:
                self.queue.task_done()

    async def _attempt(self, delivery: Delivery) -> None:
        assert self._session is not None
        hook, label = delivery.hook, target_label(delivery.hook.url)
        # Signed at send time, so a retry minutes later still passes the receiver's freshness check.
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GrantGate-Webhooks/1",
            SIGNATURE_HEADER: sign(hook.key(), int(self.clock()), delivery.body),
            "X-GrantGate-Event": delivery.event,
            "X-GrantGate-Delivery": delivery.event_id,
            "X-GrantGate-Attempt": str(delivery.attempt),
        }
        problem: str
        try:
            timeout = aiohttp.ClientTimeout(total=hook.timeout_seconds)
            async with self._session.post(
                hook.url, data=delivery.body, headers=headers, timeout=timeout
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, problem = 0, type(exc).__name__
        else:
            if 200 <= status < 300:
                self.outcomes.inc(label, "delivered")
                log.info(
                    "webhook_delivered", url=label, webhook_event=delivery.event, attempt=delivery.attempt
                )
                await self._finish(delivery)
                return
            problem = f"HTTP {status}"
        if (status == 0 or retryable(status)) and delivery.attempt < hook.max_attempts:
            delay = backoff(delivery.attempt, hook.backoff_seconds, hook.max_backoff_seconds)
            self.outcomes.inc(label, "retried")
            log.warning(
                "webhook_retry",
                url=label,
                webhook_event=delivery.event,
                attempt=delivery.attempt,
                problem=problem,
                retry_in_seconds=delay,
            )
            delivery.attempt += 1
            if self.outbox is not None and delivery.id in self.held:
                due = self._now() + timedelta(seconds=delay)
                try:
                    await self.outbox.reschedule(delivery.id, delivery.attempt, due)
                except Exception as exc:
                    log.warning("webhook_outbox_failed", error=repr(exc), delivery=delivery.event_id)
            self._later(delay, delivery)
            return
        await self._finish(delivery)
        self.outcomes.inc(label, "failed")
        log.error(
            "webhook_failed",
            url=label,
            webhook_event=delivery.event,
            delivery=delivery.event_id,
            attempts=delivery.attempt,
            problem=problem,
        )

    def _later(self, delay: float, delivery: Delivery) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            self._enqueue(delivery)

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)


def _stored(delivery: Delivery, due_at: datetime) -> StoredDelivery:
    return StoredDelivery(
        delivery.id,
        fingerprint(delivery.hook),
        delivery.event,
        delivery.event_id,
        delivery.body,
        delivery.attempt,
        due_at,
    )
