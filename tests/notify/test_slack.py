"""The Slack app against a local Slack stand-in: posting, signed clicks, modals, DMs, security alerts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support.fake_slack import (
    SIGNING_SECRET,
    TOKEN,
    FakeSlack,
    button_payload,
    send_signed,
    slack_signature,
    view_submission,
)

from proxy.access.events import GrantCreated, GrantExpiring, RequestDecided
from proxy.access.grants import Action, Grant
from proxy.access.policy import Policy, Resource, ResourcePath, Rule
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.config import Settings
from proxy.control.app import control_app
from proxy.identity.principals import Principal
from proxy.live_state import LiveState
from proxy.notify import blocks
from proxy.notify.interactions import SLACK, SlackInteractions
from proxy.notify.notifiers import Notifiers, notifying
from proxy.observe.events import AnomalyAlert, EventBus, RequestEvent
from proxy.store.sql import SqlStore
from proxy.workflow.service import Workflow

WHY = "evaluate the new checkpoint"
PUBLIC_URL = "https://grantgate.example.com"
CORPUS_TERMS = "Research use only; no training of external models."
POLICY = Policy(
    resources=(
        Resource("models", (ResourcePath("archive", "models/"),)),
        Resource("datasets", (ResourcePath("archive", "datasets/"),)),
        Resource("corpus", (ResourcePath("archive", "corpus/"),), terms=CORPUS_TERMS),
    ),
    rules=(
        Rule(
            resource="models",
            requester_groups=frozenset({"ml"}),
            actions=frozenset({Action.READ, Action.LIST}),
            max_duration=timedelta(hours=8),
            approver_groups=frozenset({"security"}),
            approvals_required=1,
            break_glass=True,
        ),
        Rule(
            resource="datasets",
            requester_groups=frozenset({"ml"}),
            approver_groups=frozenset({"security"}),
        ),
        Rule(
            resource="corpus",
            requester_groups=frozenset({"ml"}),
            approver_groups=frozenset({"security"}),
        ),
    ),
)
GROUPS = {"alice": ["ml"], "carol": ["security"], "dave": ["ml", "security"], "erin": ["security"]}
SLACK_USERS = {"UALICE": "alice", "UCAROL": "carol", "UDAVE": "dave"}  # erin is bound by her email


def slack_user(uid: str, email: str, *, confirmed: bool = True) -> dict[str, Any]:
    return {
        "id": uid,
        "deleted": False,
        "is_bot": False,
        "is_email_confirmed": confirmed,
        "profile": {"email": email},
    }


@dataclass
class Slackworld:
    fake: FakeSlack
    workflow: Workflow
    notifiers: Notifiers
    people: dict[str, Principal]
    events: list[Any]
    bus: EventBus
    session: aiohttp.ClientSession
    base: str
    settings: Settings
    clicks: SlackInteractions  # the app's handler of Slack's requests, with its background work

    @property
    def interactions(self) -> str:
        return f"{self.base}/slack/interactions"

    @property
    def commands(self) -> str:
        return f"{self.base}/slack/commands"

    async def request(self, who: str = "alice", resource: str = "models") -> AccessRequest:
        outcome = await self.workflow.request_access(self.people[who], resource, ["read"], "2h", WHY)
        return outcome.request

    async def posted(self, request_id: str) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while True:
                for call in self.fake.of("chat.postMessage"):
                    if request_id in str(call.get("blocks")):
                        return call
                await self.fake.wait_for("chat.postMessage", len(self.fake.of("chat.postMessage")) + 1)

    async def click(
        self, user: str, action: str, request_id: str, reply: str = "r"
    ) -> aiohttp.ClientResponse:
        message = await self.posted(request_id)
        ts = f"1700000000.{self.fake.of('chat.postMessage').index(message) + 1:06d}"
        payload = button_payload(
            user, action, request_id, message["channel"], ts, self.fake.response_url(reply)
        )
        return await send_signed(self.session, self.interactions, payload)

    async def stored(self, request_id: str) -> AccessRequest:
        found = await self.workflow.requests.get_request(request_id)
        assert found is not None
        return found


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[Slackworld]:
    fake = FakeSlack(users={"UERIN": slack_user("UERIN", "erin@example.com")})
    api = await fake.start()
    store = await SqlStore.open(f"sqlite:///{tmp_path}/grantgate.db", upgrade=True)
    people = {n: await store.ensure_principal(n, g) for n, g in GROUPS.items()}
    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append)
    settings = Settings.model_validate(
        {
            "server": {"public_url": PUBLIC_URL},
            "slack": {
                "enabled": True,
                "bot_token": TOKEN,
                "signing_secret": SIGNING_SECRET,
                "api_url": f"{api}api/",
                "channels": {"models": "CMODELS"},
                "default_channel": "CACCESS",
                "security_channel": "CSECURITY",
                "users": SLACK_USERS,
                "email_principal": "local_part",
                "email_domains": ["example.com"],
            },
        }
    )
    try:
        async with (
            notifying(
                settings.webhooks, settings.slack, settings.server.public_url, bus, store=store
            ) as notifiers,
            aiohttp.ClientSession() as session,
        ):
            workflow = Workflow(store, POLICY, bus)
            state = LiveState(store, b"k" * 32, interval=0.5, grace=30)
            server = TestServer(control_app(state, workflow, None, notifiers), host="127.0.0.1")
            await server.start_server()
            try:
                base = str(server.make_url("")).rstrip("/")
                clicks = server.app[SLACK]
                yield Slackworld(
                    fake, workflow, notifiers, people, events, bus, session, base, settings, clicks
                )
            finally:
                await server.close()
    finally:
        await store.close()
        await fake.close()


def block_types(call: dict[str, Any]) -> list[str]:
    return [b["type"] for b in call["blocks"]]


def buttons(call: dict[str, Any]) -> dict[str, str]:
    return {
        e["action_id"]: e["value"] for b in call["blocks"] if b["type"] == "actions" for e in b["elements"]
    }


async def dm_texts(slack: Slackworld, user: str, count: int = 1) -> list[str]:
    async with asyncio.timeout(5):
        while True:
            texts = [c["text"] for c in slack.fake.of("chat.postMessage") if c["channel"] == f"D{user}"]
            if len(texts) >= count:
                return texts
            await slack.fake.wait_for("chat.postMessage", len(slack.fake.of("chat.postMessage")) + 1)


# --- posting ---


async def test_new_request_is_posted_to_its_resource_channel_with_approve_and_deny(slack: Slackworld) -> None:
    request = await slack.request()
    message = await slack.posted(request.id)
    assert message["channel"] == "CMODELS"
    assert buttons(message) == {blocks.APPROVE: request.id, blocks.DENY: request.id}
    text = str(message["blocks"])
    assert "alice" in text and WHY in text and "s3://archive/models/" in text and "2h" in text


async def test_a_resource_without_its_own_channel_goes_to_the_default_channel(slack: Slackworld) -> None:
    request = await slack.request(resource="datasets")
    assert (await slack.posted(request.id))["channel"] == "CACCESS"


# --- clicks ---


async def test_approve_click_grants_updates_the_message_and_tells_the_requester(slack: Slackworld) -> None:
    request = await slack.request()
    started = time.monotonic()
    resp = await slack.click("UCAROL", blocks.APPROVE, request.id)
    assert resp.status == 200 and time.monotonic() - started < 3
    update = (await slack.fake.wait_for("chat.update"))[0]
    assert update["channel"] == "CMODELS" and update["ts"] == "1700000000.000001"
    assert "actions" not in block_types(update)  # nobody can act twice
    assert "Approved" in str(update["blocks"]) and "carol" in str(update["blocks"])
    stored = await slack.stored(request.id)
    assert stored.status is RequestStatus.APPROVED and stored.decided_by == "carol"
    assert stored.grant_id is not None
    [dm] = await dm_texts(slack, "UALICE")
    assert "approved by carol" in dm
    assert {"users": "UALICE"} in [{"users": c["users"]} for c in slack.fake.of("conversations.open")]


async def test_a_decision_made_through_another_gateway_updates_the_message_it_never_posted(
    slack: Slackworld,
) -> None:
    # Another replica (or this one after a restart): its own notifier, the same store. The approval comes
    # through its web page, so no Slack payload tells it where the message is.
    request = await slack.request()
    await slack.posted(request.id)
    assert slack.notifiers.slack is not None
    messages = slack.notifiers.slack.messages
    async with asyncio.timeout(5):  # recorded once Slack has answered the post
        while await messages.find(request.id) is None:
            await asyncio.sleep(0.01)
    other_bus = EventBus()
    async with notifying(
        slack.settings.webhooks,
        slack.settings.slack,
        slack.settings.server.public_url,
        other_bus,
        store=slack.workflow.store,
    ):
        other = Workflow(slack.workflow.store, POLICY, other_bus)
        await other.approve(request.id, slack.people["carol"], "approved on the web page")
        update = (await slack.fake.wait_for("chat.update"))[0]
    assert update["channel"] == "CMODELS" and update["ts"] == "1700000000.000001"
    assert "actions" not in block_types(update) and "Approved" in str(update["blocks"])
    assert await messages.find(request.id) is None  # settled: nothing to update


async def a_later_genuine_click_is_handled(slack: Slackworld, request_id: str) -> None:
    """Wait until a validly signed click sent after the refused ones has been acted on, every click's
    background work has finished and the Slack calls it queued are made: a refused click acted on
    anyway would have been acted on by then.

    Carol's Deny opens the reason form and changes nothing (the request stays pending).
    """
    resp = await slack.click("UCAROL", blocks.DENY, request_id)
    assert resp.status == 200
    [opened] = await slack.fake.wait_for("views.open")
    assert opened["trigger_id"] == f"trigger-UCAROL-{blocks.DENY}"
    async with asyncio.timeout(5):
        while slack.clicks.tasks:
            await asyncio.wait(list(slack.clicks.tasks))
    assert slack.notifiers.slack is not None
    await slack.notifiers.slack.drain()


async def test_forged_signature_is_rejected(slack: Slackworld) -> None:
    request = await slack.request()
    await slack.posted(request.id)
    payload = button_payload(
        "UCAROL", blocks.APPROVE, request.id, "CMODELS", "1", slack.fake.response_url("x")
    )
    forged = await send_signed(slack.session, slack.interactions, payload, secret="not-the-signing-secret")
    assert forged.status == 401
    garbage = await send_signed(slack.session, slack.interactions, payload, signature="v0=" + "0" * 64)
    assert garbage.status == 401
    await a_later_genuine_click_is_handled(slack, request.id)
    assert (await slack.stored(request.id)).status is RequestStatus.PENDING
    assert slack.fake.of("chat.update") == []


async def test_stale_timestamp_is_rejected_even_with_a_valid_signature(slack: Slackworld) -> None:
    request = await slack.request()
    await slack.posted(request.id)
    payload = button_payload(
        "UCAROL", blocks.APPROVE, request.id, "CMODELS", "1", slack.fake.response_url("x")
    )
    stale = await send_signed(slack.session, slack.interactions, payload, timestamp=int(time.time()) - 6 * 60)
    assert stale.status == 401
    not_a_number = await send_signed(
        slack.session,
        slack.interactions,
        payload,
        timestamp=0,
        signature=slack_signature(SIGNING_SECRET, 0, b""),
    )
    assert not_a_number.status == 401
    await a_later_genuine_click_is_handled(slack, request.id)
    assert (await slack.stored(request.id)).status is RequestStatus.PENDING
    assert slack.fake.of("chat.update") == []


async def test_an_approver_clicking_their_own_request_is_refused(slack: Slackworld) -> None:
    request = await slack.request(who="dave")  # dave is in ml and in security
    resp = await slack.click("UDAVE", blocks.APPROVE, request.id, reply="dave")
    assert resp.status == 200
    [reply] = await slack.fake.wait_reply()
    assert reply["response_type"] == "ephemeral" and "own request" in reply["text"]
    assert (await slack.stored(request.id)).status is RequestStatus.PENDING


async def test_a_requester_who_is_not_an_approver_is_refused(slack: Slackworld) -> None:
    request = await slack.request(who="dave")
    await slack.click("UALICE", blocks.APPROVE, request.id, reply="alice")
    [reply] = await slack.fake.wait_reply()
    assert "not in an approver group" in reply["text"]
    assert (await slack.stored(request.id)).status is RequestStatus.PENDING


async def test_an_unlinked_slack_user_is_refused(slack: Slackworld) -> None:
    request = await slack.request()
    await slack.click("USTRANGER", blocks.APPROVE, request.id, reply="stranger")
    [reply] = await slack.fake.wait_reply()
    assert "not linked" in reply["text"]
    assert (await slack.stored(request.id)).status is RequestStatus.PENDING


async def test_a_slack_user_is_bound_by_their_verified_email(slack: Slackworld) -> None:
    request = await slack.request()
    await slack.click("UERIN", blocks.APPROVE, request.id, reply="erin")
    [reply] = await slack.fake.wait_reply()
    assert "approved" in reply["text"]
    assert (await slack.stored(request.id)).decided_by == "erin"
    assert slack.fake.of("users.info")[0]["user"] == "UERIN"


async def test_an_unconfirmed_email_binds_nobody(slack: Slackworld) -> None:
    slack.fake.users["UMALLORY"] = slack_user("UMALLORY", "carol@example.com", confirmed=False)
    request = await slack.request()
    await slack.click("UMALLORY", blocks.APPROVE, request.id, reply="mallory")
    [reply] = await slack.fake.wait_reply()
    assert "not linked" in reply["text"]
    assert (await slack.stored(request.id)).status is RequestStatus.PENDING


async def test_two_approvers_clicking_at_once_give_exactly_one_decision(slack: Slackworld) -> None:
    request = await slack.request()
    await slack.posted(request.id)
    clicks = [
        slack.click("UCAROL", blocks.APPROVE, request.id, reply="carol"),
        slack.click("UERIN", blocks.APPROVE, request.id, reply="erin"),
        slack.click("UCAROL", blocks.APPROVE, request.id, reply="carol-again"),  # a double click
    ]
    assert [r.status for r in await asyncio.gather(*clicks)] == [200, 200, 200]
    replies = await slack.fake.wait_reply(3)
    granted = [e for e in slack.events if isinstance(e, GrantCreated)]
    assert len(granted) == 1
    stored = await slack.stored(request.id)
    assert stored.status is RequestStatus.APPROVED and stored.grant_id == granted[0].grant.id
    winners = [r for r in replies if r["text"].startswith("approved")]
    assert len(winners) == 1 and winners[0]["id"].split("-")[0] == stored.decided_by
    grants = await slack.workflow.store.list_grants(principal="alice")
    assert len(grants) == 1
    await slack.notifiers.slack.drain()  # type: ignore[union-attr]
    last = slack.fake.of("chat.update")[-1]
    assert "actions" not in block_types(last) and stored.decided_by in str(last["blocks"])


async def test_an_approval_and_a_denial_at_once_give_exactly_one_decision(slack: Slackworld) -> None:
    request = await slack.request()
    await slack.posted(request.id)
    meta = json.dumps({"request": request.id, "channel": "CMODELS", "ts": "1700000000.000001"})
    values = {blocks.REASON_BLOCK: {blocks.REASON_INPUT: {"type": "plain_text_input", "value": "not today"}}}
    approve, deny = await asyncio.gather(
        slack.click("UCAROL", blocks.APPROVE, request.id, reply="carol"),
        send_signed(
            slack.session, slack.interactions, view_submission("UERIN", blocks.DENY_VIEW, values, meta)
        ),
    )
    assert approve.status == 200 and deny.status == 200
    await slack.fake.wait_reply()
    await slack.notifiers.slack.drain()  # type: ignore[union-attr]
    decided = [e for e in slack.events if isinstance(e, RequestDecided)]
    assert len(decided) == 1
    stored = await slack.stored(request.id)
    assert stored.status is decided[0].request.status
    assert stored.status in (RequestStatus.APPROVED, RequestStatus.DENIED)
    denied_answer = await deny.text()
    # The loser is told why: the denial form shows an error if the approval won.
    assert (stored.status is RequestStatus.APPROVED) == ("already approved" in denied_answer)


async def test_deny_asks_for_a_reason_then_denies_and_tells_the_requester(slack: Slackworld) -> None:
    request = await slack.request()
    await slack.click("UCAROL", blocks.DENY, request.id)
    [opened] = await slack.fake.wait_for("views.open")
    assert opened["trigger_id"] == f"trigger-UCAROL-{blocks.DENY}"
    view = opened["view"]
    assert view["callback_id"] == blocks.DENY_VIEW
    values = {
        blocks.REASON_BLOCK: {blocks.REASON_INPUT: {"type": "plain_text_input", "value": "use the eval set"}}
    }
    submitted = view_submission("UCAROL", blocks.DENY_VIEW, values, view["private_metadata"])
    resp = await send_signed(slack.session, slack.interactions, submitted)
    assert resp.status == 200
    stored = await slack.stored(request.id)
    assert stored.status is RequestStatus.DENIED and stored.decision_comment == "use the eval set"
    update = (await slack.fake.wait_for("chat.update"))[0]
    assert "Denied" in str(update["blocks"]) and "use the eval set" in str(update["blocks"])
    assert "actions" not in block_types(update)
    [dm] = await dm_texts(slack, "UALICE")
    assert "denied by carol" in dm and "use the eval set" in dm


# --- slash command and modal ---


async def test_slash_command_opens_a_modal_whose_submission_makes_a_request(slack: Slackworld) -> None:
    form = {"command": "/grantgate", "text": "", "user_id": "UALICE", "trigger_id": "t-1", "response_url": ""}
    resp = await send_signed(slack.session, slack.commands, form)
    assert resp.status == 200
    [opened] = await slack.fake.wait_for("views.open")
    view = opened["view"]
    assert opened["trigger_id"] == "t-1" and view["callback_id"] == blocks.REQUEST_VIEW
    resource_input = next(b for b in view["blocks"] if b["block_id"] == blocks.RESOURCE_BLOCK)
    assert [o["value"] for o in resource_input["element"]["options"]] == ["models", "datasets", "corpus"]
    durations = next(b for b in view["blocks"] if b["block_id"] == blocks.DURATION_BLOCK)
    assert "8h" in [o["value"] for o in durations["element"]["options"]]
    assert "1d" not in [o["value"] for o in durations["element"]["options"]]  # longer than the maximum

    def values(justification: str) -> dict[str, Any]:
        return {
            blocks.RESOURCE_BLOCK: {blocks.RESOURCE_INPUT: {"selected_option": {"value": "models"}}},
            blocks.ACTIONS_BLOCK: {blocks.ACTIONS_INPUT: {"selected_options": [{"value": "read"}]}},
            blocks.DURATION_BLOCK: {blocks.DURATION_INPUT: {"selected_option": {"value": "4h"}}},
            blocks.JUSTIFICATION_BLOCK: {blocks.JUSTIFICATION_INPUT: {"value": justification}},
        }

    too_short = await send_signed(
        slack.session, slack.interactions, view_submission("UALICE", blocks.REQUEST_VIEW, values("eval"))
    )
    assert too_short.status == 200
    answer = await too_short.json()
    assert answer["response_action"] == "errors" and blocks.JUSTIFICATION_BLOCK in answer["errors"]

    ok = await send_signed(
        slack.session, slack.interactions, view_submission("UALICE", blocks.REQUEST_VIEW, values(WHY))
    )
    assert ok.status == 200 and await ok.text() == ""
    [made] = await slack.workflow.requests.list_requests(requester="alice")
    assert made.status is RequestStatus.PENDING and made.duration == timedelta(hours=4)
    assert made.actions == frozenset({Action.READ}) and made.justification == WHY
    assert (await slack.posted(made.id))["channel"] == "CMODELS"
    [dm] = await dm_texts(slack, "UALICE")
    assert made.id in dm


async def test_the_modal_shows_dataset_terms_and_a_request_needs_their_box_ticked(
    slack: Slackworld,
) -> None:
    form = {"command": "/grantgate", "text": "", "user_id": "UALICE", "trigger_id": "t-2", "response_url": ""}
    assert (await send_signed(slack.session, slack.commands, form)).status == 200
    [opened] = await slack.fake.wait_for("views.open")
    view = opened["view"]
    assert CORPUS_TERMS in json.dumps(view["blocks"])
    terms = next(b for b in view["blocks"] if b.get("block_id") == blocks.TERMS_BLOCK)
    [box] = terms["element"]["options"]
    assert box["value"] == "corpus " + hashlib.sha256(CORPUS_TERMS.encode()).hexdigest()

    def values(ticked: list[str]) -> dict[str, Any]:
        return {
            blocks.RESOURCE_BLOCK: {blocks.RESOURCE_INPUT: {"selected_option": {"value": "corpus"}}},
            blocks.ACTIONS_BLOCK: {blocks.ACTIONS_INPUT: {"selected_options": [{"value": "read"}]}},
            blocks.DURATION_BLOCK: {blocks.DURATION_INPUT: {"selected_option": {"value": "1h"}}},
            blocks.JUSTIFICATION_BLOCK: {blocks.JUSTIFICATION_INPUT: {"value": WHY}},
            blocks.TERMS_BLOCK: {blocks.TERMS_INPUT: {"selected_options": [{"value": v} for v in ticked]}},
        }

    unticked = await send_signed(
        slack.session, slack.interactions, view_submission("UALICE", blocks.REQUEST_VIEW, values([]))
    )
    answer = await unticked.json()
    assert answer["response_action"] == "errors" and "dataset terms" in answer["errors"][blocks.TERMS_BLOCK]
    assert await slack.workflow.requests.list_requests(requester="alice") == []

    ticked = await send_signed(
        slack.session,
        slack.interactions,
        view_submission("UALICE", blocks.REQUEST_VIEW, values([box["value"]])),
    )
    assert ticked.status == 200 and await ticked.text() == ""
    [made] = await slack.workflow.requests.list_requests(requester="alice")
    assert made.terms is not None and (made.terms.by, made.terms.text) == ("alice", CORPUS_TERMS)
    # The approvers' card says what was accepted.
    assert CORPUS_TERMS in str((await slack.posted(made.id))["blocks"])


async def test_grants_subcommand_lists_only_ones_own_grants(slack: Slackworld) -> None:
    mine = await slack.request()
    await slack.workflow.approve(mine.id, slack.people["carol"])
    theirs = await slack.request(who="dave")
    await slack.workflow.approve(theirs.id, slack.people["carol"])
    form = {
        "command": "/grantgate",
        "text": "grants",
        "user_id": "UALICE",
        "response_url": slack.fake.response_url("g"),
    }
    assert (await send_signed(slack.session, slack.commands, form)).status == 200
    [reply] = await slack.fake.wait_reply()
    own = await slack.stored(mine.id)
    other = await slack.stored(theirs.id)
    assert reply["response_type"] == "ephemeral"
    assert str(own.grant_id) in reply["text"] and str(other.grant_id) not in reply["text"]


async def test_unknown_subcommand_answers_with_usage(slack: Slackworld) -> None:
    form = {"command": "/grantgate", "text": "frobnicate", "user_id": "UALICE"}
    resp = await send_signed(slack.session, slack.commands, form)
    assert "grants" in (await resp.json())["text"]


async def test_slash_command_needs_a_valid_signature(slack: Slackworld) -> None:
    form = {"command": "/grantgate", "text": "grants", "user_id": "UALICE"}
    resp = await send_signed(slack.session, slack.commands, form, secret="wrong")
    assert resp.status == 401


# --- DMs and the security channel ---


async def test_gateway_denial_sends_one_rate_limited_dm_with_the_request_link(slack: Slackworld) -> None:
    def denied(key: str) -> RequestEvent:
        return RequestEvent(
            request_id="r1", started_at=time.time(), source_ip="10.0.0.1", user_agent="boto3",
            method="HEAD", principal="alice", action="read", bucket="archive", key=key,
            decision="deny", reason="AccessDenied", status=403,
        )  # fmt: skip

    slack.bus.emit(denied("models/a.gguf"))
    slack.bus.emit(denied("models/a.gguf"))  # a HEAD-first client retrying: no second DM
    slack.bus.emit(denied("models/b.gguf"))  # the same area: still no second DM
    slack.bus.emit(denied("datasets/train.parquet"))  # another area: its own DM
    await slack.notifiers.slack.drain()  # type: ignore[union-attr]
    texts = await dm_texts(slack, "UALICE", 2)
    assert len(texts) == 2
    assert f"{PUBLIC_URL}/request?resource=s3%3A%2F%2Farchive%2Fmodels%2Fa.gguf&action=read" in texts[0]


async def test_break_glass_and_anomalies_go_to_the_security_channel(slack: Slackworld) -> None:
    await slack.workflow.request_access(
        slack.people["alice"], "models", ["read"], "1h", WHY, break_glass=True
    )
    slack.bus.emit(
        AnomalyAlert(
            "exfiltration", "critical", "alice read 40 GiB in 5 minutes", time.time(), principal="alice"
        )
    )
    await slack.notifiers.slack.drain()  # type: ignore[union-attr]
    security = [c["text"] for c in slack.fake.of("chat.postMessage") if c["channel"] == "CSECURITY"]
    assert len(security) == 2
    assert "Break-glass" in security[0] and WHY in security[0]
    assert "exfiltration" in security[1] and "40 GiB" in security[1]
    # Break-glass is granted at once: there is nothing for approvers to click.
    assert [c for c in slack.fake.of("chat.postMessage") if c["channel"] == "CMODELS"] == []


async def test_a_repeatable_alert_reaches_the_security_channel_once_per_window(slack: Slackworld) -> None:
    """A person on hold asking again and again: one post per window, while the bus (audit, metrics,
    webhooks) carries every alert; another person's alert is posted at once."""

    def asked(who: str, at: float) -> AnomalyAlert:
        return AnomalyAlert(
            "held_principal_asked", "critical", f"{who} asked again", at, principal=who, repeat_after=600
        )

    now = time.time()
    for offset in (0, 1, 2):
        slack.bus.emit(asked("mallory", now + offset))
    slack.bus.emit(asked("trent", now))
    await slack.notifiers.slack.drain()  # type: ignore[union-attr]
    security = [c["text"] for c in slack.fake.of("chat.postMessage") if c["channel"] == "CSECURITY"]
    assert sum("mallory asked again" in t for t in security) == 1
    assert sum("trent asked again" in t for t in security) == 1


async def test_requester_is_told_before_and_when_a_grant_expires(slack: Slackworld) -> None:
    now = datetime.now(UTC)
    grant = Grant(
        "g-1", "alice", "archive", "models/", frozenset({Action.READ}), now, now + timedelta(minutes=15)
    )
    slack.bus.emit(GrantExpiring(now, "system", "expires in 15m", grant))
    [dm] = await dm_texts(slack, "UALICE")
    assert "expires in 15m" in dm and "s3://archive/models/" in dm


async def test_slack_outage_is_counted_and_never_reaches_the_workflow(slack: Slackworld) -> None:
    await slack.fake.close()  # Slack unreachable
    request = await slack.request()  # the workflow carries on
    assert request.status is RequestStatus.PENDING
    notifier = slack.notifiers.slack
    assert notifier is not None
    await notifier.drain()
    assert notifier.outcomes.total("failed") == 1
