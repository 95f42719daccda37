"""Outbound webhooks against a local receiver: signatures, the stable body, retries, filtering, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from proxy.access.grants import Action
from proxy.access.policy import Policy, Resource, ResourcePath, Rule
from proxy.config import ConfigError, Settings, load_settings
from proxy.notify import webhooks
from proxy.notify.counters import Outcomes
from proxy.notify.notifiers import Notifiers, notifying
from proxy.notify.settings import SlackSettings, WebhookSettings
from proxy.notify.webhooks import SIGNATURE_HEADER, WebhookDispatcher, backoff, sign, verify_signature
from proxy.observe.events import AnomalyAlert, EventBus
from proxy.store.outbox import WebhookOutbox
from proxy.store.schema import webhook_deliveries
from proxy.store.sql import SqlStore
from proxy.workflow.service import Workflow

SECRET = "whsec-test-0123456789"
WHY = "evaluate the new checkpoint"
POLICY = Policy(
    resources=(Resource("models", (ResourcePath("archive", "models/"),)),),
    rules=(
        Rule(
            resource="models",
            requester_groups=frozenset({"ml"}),
            actions=frozenset({Action.READ}),
            approver_groups=frozenset({"security"}),
        ),
    ),
)
TOP_LEVEL = {
    "schema",
    "id",
    "event",
    "occurred_at",
    "actor",
    "reason",
    "resource",
    "request",
    "grant",
    "alert",
    "review",
}


@dataclass
class Receiver:
    """Verifies every delivery itself; answers with `statuses` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers[SIGNATURE_HEADER]
        fields = dict(part.split("=", 1) for part in header.split(","))
        expected = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 300
        self.attempts.append({"valid": valid, "headers": dict(request.headers), "body": json.loads(body)})
        self.arrived.set()
        await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200 and valid:
            self.accepted.append(json.loads(body))
        self.arrived.set()
        return web.Response(status=status)

    async def wait(self, accepted: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.accepted) < accepted:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield found, str(server.make_url("/hook"))
    await server.close()


def sections(s: Settings) -> tuple[list[WebhookSettings], SlackSettings, str]:
    """What `notifying` takes from the settings."""
    return s.webhooks, s.slack, s.server.public_url


def settings(url: str, **hook: Any) -> Settings:
    entry = {"url": url, "secret": SECRET, "backoff_seconds": 0.05, **hook}
    return Settings.model_validate({"webhooks": [entry]})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(f"sqlite:///{tmp_path}/grantgate.db", upgrade=True)
    yield opened
    await opened.close()


async def workflow_with(store: SqlStore, bus: EventBus) -> tuple[Workflow, dict[str, Any]]:
    people = {"alice": await store.ensure_principal("alice", ["ml"])}
    people["carol"] = await store.ensure_principal("carol", ["security"])
    return Workflow(store, POLICY, bus), people


async def test_workflow_events_arrive_signed_with_a_stable_body(
    receiver: tuple[Receiver, str], store: SqlStore
) -> None:
    hook, url = receiver
    bus = EventBus()
    async with notifying(*sections(settings(url)), bus):
        flow, people = await workflow_with(store, bus)
        outcome = await flow.request_access(people["alice"], "models", ["read"], "2h", WHY)
        await flow.approve(outcome.request.id, people["carol"], "looks fine")
        await hook.wait(4)
    assert all(a["valid"] for a in hook.attempts)
    by_event = {doc["event"]: doc for doc in hook.accepted}
    assert set(by_event) == {"request_created", "approval_recorded", "request_decided", "grant_created"}
    assert all(set(doc) == TOP_LEVEL and doc["schema"] == 1 for doc in hook.accepted)
    decided = by_event["request_decided"]
    assert decided["actor"] == "carol" and decided["reason"] == "looks fine"
    assert decided["resource"] == {"name": "models", "uri": "s3://archive/models/"}
    assert decided["request"]["status"] == "approved" and decided["request"]["requester"] == "alice"
    assert decided["request"]["decided_at"] == decided["occurred_at"]
    granted = by_event["grant_created"]["grant"]
    assert granted["principal"] == "alice" and granted["request_id"] == outcome.request.id
    assert granted["expires_at"] is not None
    assert len({doc["id"] for doc in hook.accepted}) == 4
    delivery = {a["body"]["id"]: a["headers"]["X-GrantGate-Delivery"] for a in hook.attempts}
    assert all(k == v for k, v in delivery.items())


async def test_a_failed_delivery_is_retried_with_backoff_and_counted(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    hook.statuses = [500]
    registry = CollectorRegistry()
    bus = EventBus()
    async with notifying(*sections(settings(url)), bus, registry) as notifiers:
        bus.emit(
            AnomalyAlert("denial_burst", "warning", "40 denials in a minute", time.time(), principal="bob")
        )
        await hook.wait(1)
    assert [a["headers"]["X-GrantGate-Attempt"] for a in hook.attempts] == ["1", "2"]
    assert hook.attempts[0]["body"] == hook.attempts[1]["body"]  # the same document, signed afresh
    assert hook.accepted[0]["event"] == "anomaly_alert" and hook.accepted[0]["actor"] == "bob"
    assert hook.accepted[0]["alert"]["kind"] == "denial_burst"
    assert _notifier_count(notifiers, "retried") == 1 and _notifier_count(notifiers, "delivered") == 1

    def metric(outcome: str) -> float | None:
        labels = {"target": url.split("/")[2], "outcome": outcome}
        return registry.get_sample_value("grantgate_webhook_deliveries_total", labels)

    assert metric("retried") == 1 and metric("delivered") == 1


def _notifier_count(notifiers: Notifiers, outcome: str) -> int:
    assert notifiers.webhooks is not None
    return notifiers.webhooks.outcomes.total(outcome)


async def settled(
    dispatcher: WebhookDispatcher, hook: Receiver, emit: Callable[[AnomalyAlert], None]
) -> None:
    """Return once everything `dispatcher` was given so far has been attempted, its retries included.

    A marker alert, refused once, goes through a retry of its own: its backoff timer was set after any
    earlier delivery's, so once the marker is accepted and the queue is idle, every earlier retry has
    been sent too. The marker is then forgotten.
    """
    hook.statuses.append(503)
    emit(AnomalyAlert("marker", "info", "marker", time.time()))
    async with asyncio.timeout(5):
        while not any(doc["alert"]["kind"] == "marker" for doc in hook.accepted if doc.get("alert")):
            hook.arrived.clear()
            await hook.arrived.wait()
    await asyncio.wait_for(dispatcher.queue.join(), 5)
    hook.attempts[:] = [a for a in hook.attempts if (a["body"].get("alert") or {}).get("kind") != "marker"]
    hook.accepted[:] = [d for d in hook.accepted if (d.get("alert") or {}).get("kind") != "marker"]


async def test_a_client_error_is_not_retried_and_is_counted_as_failed(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    hook.statuses = [410]
    bus = EventBus()
    async with notifying(*sections(settings(url)), bus) as notifiers:
        assert notifiers.webhooks is not None
        bus.emit(AnomalyAlert("exfiltration", "critical", "too much", time.time()))
        async with asyncio.timeout(5):  # the answer handled, whichever way
            while (
                notifiers.webhooks.outcomes.total("failed") + notifiers.webhooks.outcomes.total("retried") < 1
            ):
                await asyncio.sleep(0.02)
        await settled(notifiers.webhooks, hook, bus.emit)
    assert len(hook.attempts) == 1 and hook.accepted == []
    assert (
        _notifier_count(notifiers, "failed") == 1 and _notifier_count(notifiers, "retried") == 1
    )  # the marker


async def test_delivery_gives_up_after_max_attempts(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    hook.statuses = [503, 503, 503, 503]
    bus = EventBus()
    async with notifying(*sections(settings(url, max_attempts=3)), bus) as notifiers:
        bus.emit(AnomalyAlert("exfiltration", "critical", "too much", time.time()))
        async with asyncio.timeout(5):
            while _notifier_count(notifiers, "failed") < 1:
                await asyncio.sleep(0.02)
    assert len(hook.attempts) == 3 and _notifier_count(notifiers, "retried") == 2


async def test_a_slow_receiver_never_blocks_the_workflow(
    receiver: tuple[Receiver, str], store: SqlStore
) -> None:
    hook, url = receiver
    hook.delay = 1.0
    bus = EventBus()
    async with notifying(*sections(settings(url)), bus):
        flow, people = await workflow_with(store, bus)
        started = time.monotonic()
        for _ in range(5):
            await flow.request_access(people["alice"], "models", ["read"], "1h", WHY)
        assert time.monotonic() - started < 0.9
        await hook.wait(5)


async def test_only_the_subscribed_event_types_are_sent(
    receiver: tuple[Receiver, str], store: SqlStore
) -> None:
    hook, url = receiver
    bus = EventBus()
    async with notifying(*sections(settings(url, events=["request_decided"])), bus) as notifiers:
        assert notifiers.webhooks is not None
        flow, people = await workflow_with(store, bus)
        outcome = await flow.request_access(people["alice"], "models", ["read"], "1h", WHY)
        await flow.deny(outcome.request.id, people["carol"], "not now")
        bus.emit(AnomalyAlert("exfiltration", "critical", "too much", time.time()))
        # A second decision, subscribed to: it is queued after anything the events above queued.
        later = await flow.request_access(people["alice"], "models", ["read"], "1h", WHY)
        await flow.deny(later.request.id, people["carol"], "still not now")
        await hook.wait(2)
        await asyncio.wait_for(notifiers.webhooks.queue.join(), 5)
    assert [d["event"] for d in hook.accepted] == ["request_decided", "request_decided"]
    assert sorted(d["request"]["decision_comment"] for d in hook.accepted) == ["not now", "still not now"]
    assert all(d["request"]["status"] == "denied" for d in hook.accepted)


def test_signature_verification_rejects_tampering_and_old_deliveries() -> None:
    body, key, now = b'{"event":"grant_created"}', SECRET.encode(), 1_700_000_000
    header = sign(key, now, body)
    assert verify_signature(key, header, body, now + 10)
    assert not verify_signature(key, header, body + b" ", now)
    assert not verify_signature(b"other-secret", header, body, now)
    assert not verify_signature(key, header, body, now + 301)
    assert not verify_signature(key, "t=notanumber,v1=00", body, now)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_webhook_config_needs_a_secret_and_known_event_types(tmp_path: Path) -> None:
    config = tmp_path / "grantgate.toml"
    config.write_text('[[webhooks]]\nurl = "https://siem.example.com/in"\n')
    with pytest.raises(ConfigError, match="secret"):
        load_settings(config)
    config.write_text(
        '[[webhooks]]\nurl = "https://siem.example.com/in"\nsecret = "s"\nevents = ["grant_eaten"]\n'
    )
    with pytest.raises(ConfigError, match="unknown event types"):
        load_settings(config)
    config.write_text(
        '[[webhooks]]\nurl = "https://siem.example.com/in"\nsecret = "s"\nevents = ["grant_created"]\n'
    )
    assert load_settings(config).webhooks[0].wants("grant_created")
    assert not load_settings(config).webhooks[0].wants("grant_revoked")


# --- the outbox: deliveries outlive the process that queued them


def dispatcher(url: str, store: SqlStore, *, lease: float = 60.0, **hook: Any) -> WebhookDispatcher:
    hooks = list(settings(url, **hook).webhooks)
    outcomes = Outcomes("grantgate_webhook_deliveries", "test", CollectorRegistry())
    return WebhookDispatcher(hooks, outcomes, outbox=WebhookOutbox(store), lease_seconds=lease)


async def outbox_rows(store: SqlStore) -> list[Any]:
    async with store.engine.connect() as conn:
        return list(await conn.execute(select(webhook_deliveries)))


@contextlib.asynccontextmanager
async def running(*dispatchers: WebhookDispatcher) -> AsyncIterator[None]:
    for d in dispatchers:
        d.start()
    try:
        yield
    finally:
        for d in dispatchers:
            await d.close()


def claim_rounds(d: WebhookDispatcher) -> Callable[[int], Awaitable[None]]:
    """Count the claim rounds `d` completes; the function returned waits for `n` more of them."""
    assert d.outbox is not None
    claim = d.outbox.claim
    done = asyncio.Condition()
    rounds = 0

    async def counted(**kwargs: Any) -> Any:
        nonlocal rounds
        found = await claim(**kwargs)
        async with done:
            rounds += 1
            done.notify_all()
        return found

    async def more(n: int) -> None:
        target = rounds + n
        async with asyncio.timeout(5), done:
            await done.wait_for(lambda: rounds >= target)

    d.outbox.claim = counted  # type: ignore[method-assign]
    return more


async def fail_once(d: WebhookDispatcher) -> None:
    """Send an alert the receiver refuses once; return when the retry is recorded and scheduled."""
    d(AnomalyAlert("exfiltration", "critical", "too much", time.time()))
    async with asyncio.timeout(5):
        while not d._timers:
            await asyncio.sleep(0.01)


async def test_a_retry_pending_at_shutdown_is_delivered_by_the_next_process(
    receiver: tuple[Receiver, str], store: SqlStore
) -> None:
    hook, url = receiver
    hook.statuses = [503]
    first = dispatcher(url, store, backoff_seconds=0.5)
    first.start()
    await fail_once(first)  # the retry is recorded, half a second away
    await first.close(drain_seconds=0)
    assert hook.accepted == [] and len(await outbox_rows(store)) == 1

    async with running(dispatcher(url, store, backoff_seconds=0.5)):  # the gateway, restarted
        await hook.wait(1)
    assert [a["headers"]["X-GrantGate-Attempt"] for a in hook.attempts] == ["1", "2"]
    assert len({a["headers"]["X-GrantGate-Delivery"] for a in hook.attempts}) == 1
    assert await outbox_rows(store) == []


async def test_deliveries_of_a_process_that_died_are_taken_over_once_its_lease_ends(
    receiver: tuple[Receiver, str], store: SqlStore
) -> None:
    hook, url = receiver
    hook.statuses = [503]
    dead = dispatcher(url, store, lease=0.3, backoff_seconds=0.1)
    dead.start()
    await fail_once(dead)
    # Killed: no close, no hand-over; its timers and tasks just stop.
    for timer in dead._timers:
        timer.cancel()
    for task in dead._tasks:
        task.cancel()

    async with running(dispatcher(url, store, lease=0.3, backoff_seconds=0.1)):
        await hook.wait(1)
    if dead._session is not None:
        await dead._session.close()
    assert len(hook.attempts) == 2 and hook.attempts[1]["headers"]["X-GrantGate-Attempt"] == "2"
    assert await outbox_rows(store) == []


async def test_a_held_delivery_is_not_taken_by_another_process(
    receiver: tuple[Receiver, str], store: SqlStore
) -> None:
    hook, url = receiver
    hook.statuses = [503]
    holder = dispatcher(url, store, lease=0.3, backoff_seconds=1.0)
    other = dispatcher(url, store, lease=0.3, backoff_seconds=1.0)
    other_rounds = claim_rounds(other)
    async with running(holder, other):
        holder(AnomalyAlert("exfiltration", "critical", "too much", time.time()))
        # The retry waits a second, several lease periods: the holder must keep renewing meanwhile.
        await hook.wait(1, timeout=5)
        async with asyncio.timeout(5):
            while holder.held:  # delivered: out of the outbox
                await asyncio.sleep(0.01)
        # Two more of the other's claim rounds: one that began before the row was gone has ended, so
        # had it taken the delivery, it would hold it now or have sent it.
        await other_rounds(2)
    assert len(hook.attempts) == 2 and other.held == {}


async def test_a_delivery_for_a_hook_no_longer_configured_is_dropped(
    receiver: tuple[Receiver, str], store: SqlStore
) -> None:
    hook, url = receiver
    hook.statuses = [503]
    old = dispatcher(url + "?old", store, backoff_seconds=30)
    old.start()
    await fail_once(old)
    await old.close(drain_seconds=0)
    async with running(dispatcher(url, store)), asyncio.timeout(5):
        while await outbox_rows(store):
            await asyncio.sleep(0.02)
    assert len(hook.attempts) == 1


async def test_with_the_queue_full_a_delivery_waits_in_the_outbox_instead_of_being_dropped(
    receiver: tuple[Receiver, str], store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, url = receiver
    hook.delay = 0.1
    monkeypatch.setattr(webhooks, "QUEUE_LIMIT", 1)
    busy = dispatcher(url, store, lease=0.3)
    busy._workers = 1
    async with running(busy):
        for n in range(3):  # one in flight, one queued, one past the queue
            busy(AnomalyAlert("exfiltration", "critical", f"too much {n}", time.time()))
        await hook.wait(3, timeout=10)
    assert sorted(d["alert"]["message"] for d in hook.accepted) == [f"too much {n}" for n in range(3)]
    assert busy.outcomes.total("dropped") == 0
    assert await outbox_rows(store) == []


async def test_the_gateway_wires_its_store_in_as_the_outbox(
    receiver: tuple[Receiver, str], store: SqlStore
) -> None:
    hook, url = receiver
    bus = EventBus()
    async with notifying(*sections(settings(url)), bus, store=store) as notifiers:
        assert notifiers.webhooks is not None and notifiers.webhooks.outbox is not None
        bus.emit(AnomalyAlert("exfiltration", "critical", "too much", time.time()))
        await hook.wait(1)
        async with asyncio.timeout(5):
            while await outbox_rows(store):  # recorded, then removed once delivered
                await asyncio.sleep(0.02)
    assert len(hook.attempts) == 1
