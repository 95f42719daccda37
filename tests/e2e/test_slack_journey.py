"""The Slack app and webhooks on real gateway processes: denied -> DM, request -> channel, click -> access.

A local Slack stand-in and a webhook receiver run in a thread of the test; the gateways are configured
to talk to them exactly as they would to Slack and a SIEM.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError
from support.access import api
from support.fake_slack import SIGNING_SECRET, TOKEN, FakeSlack, button_payload, send_signed
from support.world import BUCKET, World, run_sync, running_world
from urllib3.exceptions import ProtocolError

from proxy.access.budgets import Budget
from proxy.audit.store import AuditQuery, AuditStore, StoredEvent
from proxy.notify import blocks
from proxy.store.sql import SqlStore

T = TypeVar("T")
WEBHOOK_SECRET = "whsec-e2e-0123456789abcdef"
WHY = "evaluate the new quantisation"


class Background:
    """An event loop in a thread for the Slack stand-in and the webhook receiver."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Receiver:
    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        fields = dict(p.split("=", 1) for p in request.headers["X-GrantGate-Signature"].split(","))
        mac = hmac.new(WEBHOOK_SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, fields["v1"]):
            return web.Response(status=400)
        self.documents.append(json.loads(body))
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return str(self.server.make_url("/hook"))


def eventually(check: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def slack_world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[World, FakeSlack, Receiver, Background]]:
    background = Background()
    fake, receiver = FakeSlack(), Receiver()

    async def start() -> tuple[str, str]:
        return await fake.start(), await receiver.start()

    api, hook = background.run(start())
    config = f"""
[policy]
sweep_interval_seconds = 0.2

[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
actions = ["read", "list"]
approver_groups = ["security"]

[policy.resources.reviewed]
paths = ["s3://{BUCKET}/reviewed/"]
review_every = "2s"
review_grace = "1h"

[[policy.rules]]
resource = "reviewed"
requester_groups = ["ml"]
approver_groups = ["security"]

[slack]
enabled = true
bot_token = "{TOKEN}"
signing_secret = "{SIGNING_SECRET}"
api_url = "{api}api/"
channels = {{ models = "CMODELS", reviewed = "CREVIEWED" }}
security_channel = "CSECURITY"
users = {{ UALICE = "alice", UCAROL = "carol", UERIN = "erin", UHANK = "hank" }}

[[webhooks]]
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
events = ["request_created", "request_decided", "grant_budget_spent", "review_decided"]
"""
    try:
        with running_world(tmp_path_factory.mktemp("slack-world"), extra_config=config) as world:
            yield world, fake, receiver, background
    finally:
        background.run(fake.close())
        if receiver.server is not None:
            background.run(receiver.server.close())
        background.stop()


def messages_to(fake: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [c for c in fake.of("chat.postMessage") if c["channel"] == channel]


def test_denied_then_requested_then_approved_in_slack(
    slack_world: tuple[World, FakeSlack, Receiver, Background],
) -> None:
    world, fake, receiver, background = slack_world
    alice, carol = world.person("alice", ("ml",)), world.person("carol", ("security",))
    key = "models/slack/llama.gguf"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"GGUF")

    # 1. The gateway refuses alice; she gets a DM with the request link, once.
    for _ in range(3):
        with pytest.raises(ClientError):
            world.client(alice).head_object(Bucket=BUCKET, Key=key)
    [dm] = eventually(lambda: messages_to(fake, "DUALICE"))
    assert f"{world.http.control_url}/request?resource=s3%3A%2F%2F{BUCKET}%2Fmodels%2Fslack" in dm["text"]
    time.sleep(0.3)
    assert len(messages_to(fake, "DUALICE")) == 1

    # 2. She asks through the API; the request appears in the models channel with buttons.
    request = urllib.request.Request(
        f"{world.http.control_url}/api/v1/requests",
        data=json.dumps({"resource": "models", "actions": ["read"], "justification": WHY}).encode(),
        headers={"Authorization": f"Bearer {world.api_token(alice)}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        request_id = json.load(resp)["id"]
    [posted] = eventually(lambda: messages_to(fake, "CMODELS"))
    assert {e["value"] for b in posted["blocks"] if b["type"] == "actions" for e in b["elements"]} == {
        request_id
    }
    # With what carol needs to decide: alice's groups and what lies under the prefix (the one object).
    [shown] = [b["text"]["text"] for b in posted["blocks"] if b.get("block_id") == "approver_context"]
    size = rf"Under s3://{BUCKET}/models/: \d+ objects?, [\d.]+ (?:B|KiB|MiB|GiB)"
    assert "Groups: ml" in shown and re.search(size, shown)
    assert "Past grants here: none" in shown

    # 3. carol clicks Approve in Slack (a signed request to the control listener).
    async def click() -> int:
        payload = button_payload(
            "UCAROL", blocks.APPROVE, request_id, "CMODELS", "1700000000.000001", fake.response_url("carol")
        )
        async with aiohttp.ClientSession() as session:
            return (
                await send_signed(session, f"{world.http.control_url}/slack/interactions", payload)
            ).status

    assert background.run(click()) == 200
    [update] = eventually(lambda: fake.of("chat.update"))
    assert "Approved" in str(update["blocks"]) and "carol" in str(update["blocks"])
    assert not [b for b in update["blocks"] if b["type"] == "actions"]
    approved = eventually(
        lambda: [m for m in messages_to(fake, "DUALICE") if "approved by carol" in m["text"]]
    )
    assert approved

    # 4. alice reads; the SIEM got both events, signed.
    world.sync()
    assert world.client(alice).get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"GGUF"
    events = eventually(
        lambda: {d["event"] for d in receiver.documents} >= {"request_created", "request_decided"}
    )
    assert events
    decided = next(d for d in receiver.documents if d["event"] == "request_decided")
    assert decided["actor"] == "carol" and decided["request"]["request_id"] == request_id
    assert carol.name == decided["actor"]


def test_expiry_dm_offers_an_extension_that_goes_to_the_approvers(
    slack_world: tuple[World, FakeSlack, Receiver, Background],
) -> None:
    world, fake, _receiver, background = slack_world
    alice = world.person("alice", ("ml",))
    grant = world.grant(alice, f"s3://{BUCKET}/models/slack-extend/", "read", ttl=timedelta(minutes=10))

    # The sweep warns about a grant ending within expiry_warning (15 min): a DM with an Extend button.
    def warning() -> list[dict[str, Any]]:
        return [m for m in messages_to(fake, "DUALICE") if grant.id in json.dumps(m.get("blocks") or [])]

    [dm] = eventually(warning)
    [button] = [e for b in dm["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert (button["action_id"], button["value"], button["text"]["text"]) == (
        blocks.EXTEND,
        grant.id,
        "Extend by 10m",
    )

    async def click() -> list[dict[str, Any]]:
        before = len(fake.replies)
        payload = button_payload(
            "UALICE", blocks.EXTEND, grant.id, "DUALICE", "1700000000.000009", fake.response_url("alice")
        )
        async with aiohttp.ClientSession() as session:
            await send_signed(session, f"{world.http.control_url}/slack/interactions", payload)
        return await fake.wait_reply(before + 1)

    replies = background.run(click())
    assert f"extension of {grant.id} waiting for 1 approval(s) from security" in replies[-1]["text"]
    card = eventually(
        lambda: [m for m in messages_to(fake, "CMODELS") if grant.id in json.dumps(m["blocks"])]
    )
    assert "starts where it ends" in json.dumps(card[0]["blocks"])


def trail(world: World, query: AuditQuery) -> list[StoredEvent]:
    """What the hash-chained audit trail in the store holds for `query`."""

    async def read() -> list[StoredEvent]:
        store = await SqlStore.open(world.store_url)
        try:
            return await AuditStore(store).query(query)
        finally:
            await store.close()

    return run_sync(read())


def test_a_spent_budget_is_audited_once_and_sent_to_webhooks(
    slack_world: tuple[World, FakeSlack, Receiver, Background],
) -> None:
    world, _fake, receiver, _background = slack_world
    who = world.person("frank-budget", ("ml",))
    world.upstream().put_object(Bucket=BUCKET, Key="models/budget/w.bin", Body=b"x" * 3000)
    grant = world.grant(who, f"s3://{BUCKET}/models/budget/", "read", budget=Budget(max_bytes=2000))

    body = world.client(who).get_object(Bucket=BUCKET, Key="models/budget/w.bin")["Body"]
    with pytest.raises((IncompleteReadError, ResponseStreamingError, ProtocolError)):
        body.read()  # cut at the limit: an error, never a clean short object

    [sent] = eventually(lambda: [d for d in receiver.documents if d["event"] == "grant_budget_spent"])
    assert sent["grant"]["grant_id"] == grant.id and sent["grant"]["principal"] == who.name
    assert sent["grant"]["budget"] == {"max_bytes": 2000, "max_objects": None, "single_use": False}
    assert sent["grant"]["usage"] == {"bytes": 2000, "objects": 1}
    assert sent["resource"]["uri"] == f"s3://{BUCKET}/models/budget/"
    [audited] = eventually(lambda: trail(world, AuditQuery(kind="grant_budget_spent", grant_id=grant.id)))
    assert audited.body["principal"] == who.name
    assert audited.body["event"]["usage"] == {"bytes": 2000, "objects": 1}

    world.sync()
    with pytest.raises(ClientError, match="budget"):
        world.client(who).get_object(Bucket=BUCKET, Key="models/budget/w.bin")


def test_slack_shows_the_budget_on_the_request_card_and_its_use_in_grantgate_grants(
    slack_world: tuple[World, FakeSlack, Receiver, Background],
) -> None:
    world, fake, _receiver, background = slack_world  # erin holds no other grant: her read counts here
    erin, carol = world.person("erin", ("ml",)), world.person("carol", ("security",))
    world.upstream().put_object(Bucket=BUCKET, Key="models/budget-card/w.bin", Body=b"b" * 3000)
    asked = {"max_bytes": 4096, "max_objects": 2, "single_use": True}
    status, made = api(
        world,
        world.api_token(erin),
        "POST",
        "/requests",
        {"resource": f"s3://{BUCKET}/models/budget-card/", "justification": WHY, "budget": asked},
    )
    assert status == 201, made
    [card] = eventually(
        lambda: [m for m in messages_to(fake, "CMODELS") if made["id"] in json.dumps(m["blocks"])]
    )
    fields = [f["text"] for b in card["blocks"] for f in b.get("fields", [])]
    assert "*Budget*\n4 KiB, 2 objects, single-use" in fields

    status, decided = api(world, world.api_token(carol), "POST", f"/requests/{made['id']}/approve")
    assert status == 200, decided
    world.sync()
    assert world.client(erin).get_object(Bucket=BUCKET, Key="models/budget-card/w.bin")["Body"].read()
    grant_id = decided["grant"]["id"]
    eventually(lambda: api(world, world.api_token(erin), "GET", f"/grants/{grant_id}")[1]["usage"]["bytes"])

    async def ask() -> int:
        form = {"command": "/grantgate", "text": "grants", "user_id": "UERIN"}
        form["response_url"] = fake.response_url("budget")
        async with aiohttp.ClientSession() as session:
            return (await send_signed(session, f"{world.http.control_url}/slack/commands", form)).status

    assert background.run(ask()) == 200
    [reply] = eventually(lambda: [r for r in fake.replies if r["id"] == "budget"])
    line = next(line for line in reply["text"].splitlines() if grant_id in line)
    assert "budget 2.9 KiB of 4 KiB, 1 of 2 objects, single-use" in line


def test_review_reminder_in_slack_is_confirmed_with_its_button(
    slack_world: tuple[World, FakeSlack, Receiver, Background],
) -> None:
    world, fake, receiver, background = slack_world
    hank, carol = world.person("hank", ("ml",)), world.person("carol", ("security",))
    grant = world.grant(hank, f"s3://{BUCKET}/reviewed/hank/", "read", ttl=None)

    # The holder is told by DM; the reviewers get a card with Confirm / Revoke in the resource's channel.
    [told, *_] = eventually(
        lambda: [m for m in messages_to(fake, "DUHANK") if "periodic review" in m["text"]]
    )
    assert f"s3://{BUCKET}/reviewed/hank/" in told["text"]
    [card, *_] = eventually(lambda: messages_to(fake, "CREVIEWED"))
    assert "hank" in card["text"] and "Confirm or revoke by" in card["text"]
    assert "Unused this period." in card["text"]  # the holder's use since the period began: none
    [buttons] = [b["elements"] for b in card["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e["text"]["text"]) for e in buttons] == [
        (blocks.REVIEW_CONFIRM, "Confirm"),
        (blocks.REVIEW_REVOKE, "Revoke"),
    ]
    review_id = buttons[0]["value"]

    async def click(user: str) -> list[dict[str, Any]]:
        before = len(fake.replies)
        payload = button_payload(
            user, blocks.REVIEW_CONFIRM, review_id, "CREVIEWED", "1700000000.000011", fake.response_url(user)
        )
        async with aiohttp.ClientSession() as session:
            await send_signed(session, f"{world.http.control_url}/slack/interactions", payload)
        return await fake.wait_reply(before + 1)

    # The holder's own click is refused; a reviewer's confirms.
    assert "Not confirmed: nobody reviews their own access" in background.run(click("UHANK"))[-1]["text"]
    replies = background.run(click("UCAROL"))
    assert replies[-1]["text"] == f"hank's access to s3://{BUCKET}/reviewed/hank/ is confirmed."
    [sent] = eventually(lambda: [d for d in receiver.documents if d["event"] == "review_decided"])
    assert sent["review"]["review_id"] == review_id and sent["review"]["review_status"] == "confirmed"
    assert sent["actor"] == carol.name and sent["grant"] is None
    assert sent["resource"] == {"name": "reviewed", "uri": f"s3://{BUCKET}/reviewed/hank/"}
    assert grant.id == sent["review"]["grant_id"]
