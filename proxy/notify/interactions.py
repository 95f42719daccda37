"""Slack's requests to GrantGate: button clicks, modal submissions and the `/grantgate` slash command.

Every request is verified (signing secret, timestamp within 5 minutes) before its body is parsed, and
answered within Slack's 3 s: the work runs in a background task. Decisions go through the workflow,
which re-checks the policy at click time and lets exactly one of two racing approvals decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

import structlog
from aiohttp import web
from slack_sdk.errors import SlackClientError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook.async_client import AsyncWebhookClient

from proxy.access import policy as rules
from proxy.access.extensions import offered
from proxy.access.requests import RequestStatus, Via
from proxy.access.reviews import Decision
from proxy.identity.principals import Principal
from proxy.notify import blocks
from proxy.notify.slack import SlackNotifier
from proxy.workflow.budgets import usage_of
from proxy.workflow.extend import extend_grant
from proxy.workflow.service import Conflict, Outcome, Workflow, WorkflowError

log = structlog.get_logger("grantgate.slack")

# Slack waits 3 s; inline work (modal validation) gets this much before the answer goes out anyway.
INLINE_SECONDS = 2.5
USAGE = (
    "`/grantgate` opens a form to request access · `/grantgate grants` lists your active grants · "
    "`/grantgate help` shows this"
)
_FIELD_OF_CODE = {
    "action_not_requestable": blocks.ACTIONS_BLOCK,
    "no_actions": blocks.ACTIONS_BLOCK,
    "invalid_actions": blocks.ACTIONS_BLOCK,
    "invalid_duration": blocks.DURATION_BLOCK,
    "duration_too_long": blocks.DURATION_BLOCK,
    "justification_missing": blocks.JUSTIFICATION_BLOCK,
    "justification_too_short": blocks.JUSTIFICATION_BLOCK,
    "justification_too_long": blocks.JUSTIFICATION_BLOCK,
    "terms_not_accepted": blocks.TERMS_BLOCK,
    "terms_changed": blocks.TERMS_BLOCK,
}

_REVIEW_DECISIONS = {blocks.REVIEW_CONFIRM: Decision.CONFIRM, blocks.REVIEW_REVOKE: Decision.REVOKE}
_PAST = {Decision.CONFIRM: "confirmed", Decision.REVOKE: "revoked"}


class _FuncClock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


def view_values(view: dict[str, Any]) -> dict[str, Any]:
    """block_id -> the submitted value: text, one selected option's value, or a list of them."""
    out: dict[str, Any] = {}
    for block_id, inputs in ((view.get("state") or {}).get("values") or {}).items():
        for item in inputs.values():
            if "selected_options" in item:
                out[block_id] = [o["value"] for o in item["selected_options"] or []]
            elif "selected_option" in item:
                out[block_id] = (item["selected_option"] or {}).get("value")
            else:
                out[block_id] = item.get("value")
    return out


class SlackInteractions:
    def __init__(self, notifier: SlackNotifier, workflow: Workflow) -> None:
        self.notifier = notifier
        self.workflow = workflow
        self.verifier = SignatureVerifier(notifier.settings.secret(), _FuncClock(notifier.clock))
        self.tasks: set[asyncio.Task[Any]] = set()

    # --- HTTP ---

    async def _verified(self, request: web.Request) -> bytes:
        body = await request.read()
        try:
            valid = self.verifier.is_valid(
                body,
                request.headers.get("X-Slack-Request-Timestamp"),
                request.headers.get("X-Slack-Signature"),
            )
        except ValueError:  # a timestamp that is not a number
            valid = False
        if not valid:
            log.warning("slack_request_rejected", path=request.path, remote=request.remote)
            raise web.HTTPUnauthorized(text="invalid or stale Slack signature")
        return body

    async def interactions(self, request: web.Request) -> web.StreamResponse:
        body = await self._verified(request)
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
        except (KeyError, IndexError, ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="expected a form field named payload") from None
        if not isinstance(payload, dict):
            raise web.HTTPBadRequest(text="payload must be a JSON object")
        kind = payload.get("type")
        user = str((payload.get("user") or {}).get("id", ""))
        if kind == "block_actions":
            for action in payload.get("actions") or []:
                self._spawn(self._button(payload, action, user))
            return web.Response()
        if kind == "view_submission":
            view = payload.get("view") or {}
            if view.get("callback_id") == blocks.REQUEST_VIEW:
                return await self._submit_request(view, user)
            if view.get("callback_id") == blocks.DENY_VIEW:
                return await self._submit_denial(view, user)
        return web.Response()

    async def commands(self, request: web.Request) -> web.StreamResponse:
        body = await self._verified(request)
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        words = form.get("text", "").strip().split()
        sub = words[0].lower() if words else "request"
        user, response_url = form.get("user_id", ""), form.get("response_url", "")
        if sub == "request":
            self._spawn(self._open_request_modal(user, form.get("trigger_id", ""), response_url))
            return web.Response()
        if sub == "grants":
            self._spawn(self._list_grants(user, response_url))
            return web.Response()
        return web.json_response({"response_type": "ephemeral", "text": USAGE})

    # --- background work ---

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack_interaction_failed", error=repr(task.exception()))

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)

    async def _act_as(self, user_id: str) -> Principal | None:
        """The principal a Slack user is bound to, with its groups as stored now; None if unbound."""
        try:
            name = await self.notifier.principal_for(user_id)
        except SlackClientError as exc:
            log.error("slack_user_lookup_failed", user=user_id, error=repr(exc))
            return None
        return None if name is None else await self.workflow.principal(name)

    async def _reply(self, response_url: str, text: str) -> None:
        """An ephemeral answer only the clicker sees, through the response_url Slack signed."""
        if not response_url:
            return

        async def send() -> None:
            await AsyncWebhookClient(response_url).send(
                text=text, response_type="ephemeral", replace_original=False
            )

        await self.notifier.run(send)

    async def _not_linked(self, response_url: str) -> None:
        await self._reply(
            response_url, "Your Slack account is not linked to a GrantGate principal; ask an admin."
        )

    async def _button(self, payload: dict[str, Any], action: dict[str, Any], user: str) -> None:
        action_id, request_id = action.get("action_id"), str(action.get("value", ""))
        if action_id == blocks.EXTEND and request_id:
            await self._extend(request_id, user, str(payload.get("response_url", "")))
            return
        if action_id in _REVIEW_DECISIONS and request_id:
            decision = _REVIEW_DECISIONS[action_id]
            await self._review(request_id, decision, user, str(payload.get("response_url", "")))
            return
        if action_id not in (blocks.APPROVE, blocks.DENY) or not request_id:
            return
        response_url = str(payload.get("response_url", ""))
        channel = str((payload.get("channel") or {}).get("id", ""))
        message = payload.get("message") or {}
        ts = str((payload.get("container") or {}).get("message_ts") or message.get("ts") or "")
        if channel and ts:  # where Slack (signed) says the message is, for a store that never heard
            await self.notifier.messages.remember(request_id, channel, ts)
        actor = await self._act_as(user)
        if actor is None:
            await self._not_linked(response_url)
            return
        if action_id == blocks.APPROVE:
            await self._approve(request_id, actor, response_url)
        else:
            trigger = str(payload.get("trigger_id", ""))
            await self._ask_denial_reason(request_id, actor, trigger, channel, ts, response_url)

    async def _approve(self, request_id: str, approver: Principal, response_url: str) -> None:
        try:
            outcome = await self.workflow.approve(request_id, approver, "approved in Slack")
        except WorkflowError as exc:
            log.info("slack_approval_refused", request_id=request_id, actor=approver.name, code=exc.code)
            if isinstance(exc, Conflict):
                await self._show_current(request_id)
            await self._reply(response_url, f"Not approved: {exc.message}")
            return
        await self._reply(response_url, outcome.message)

    async def _extend(self, grant_id: str, user: str, response_url: str) -> None:
        """The expiry DM's button: ask to extend the grant by what the DM offered."""
        holder = await self._act_as(user)
        if holder is None:
            await self._not_linked(response_url)
            return
        try:
            grant = await self.workflow.get_grant(grant_id, holder)
            outcome = await extend_grant(
                self.workflow, grant_id, holder, offered(grant), "extended from Slack", via=Via.SLACK
            )
        except WorkflowError as exc:
            log.info("slack_extension_refused", grant_id=grant_id, actor=holder.name, code=exc.code)
            await self._reply(response_url, f"Not extended: {exc.message}")
            return
        await self._reply(response_url, outcome.message)

    async def _review(self, review_id: str, decision: Decision, user: str, response_url: str) -> None:
        """A review reminder's Confirm / Revoke: decided as the API would, by whoever clicked."""
        reviewer = await self._act_as(user)
        if reviewer is None:
            await self._not_linked(response_url)
            return
        try:
            review = await self.workflow.reviews.decide(
                review_id, reviewer, decision, f"{_PAST[decision]} in Slack"
            )
        except WorkflowError as exc:
            log.info("slack_review_refused", review_id=review_id, actor=reviewer.name, code=exc.code)
            await self._reply(response_url, f"Not {_PAST[decision]}: {exc.message}")
            return
        await self._reply(
            response_url, f"{review.principal}'s access to {review.resource} is {review.status.value}."
        )

    async def _show_current(self, request_id: str) -> None:
        # Someone else decided first: make sure the message shows it, whichever gateway they used.
        current = await self.workflow.requests.get_request(request_id)
        if current is not None and current.status is not RequestStatus.PENDING:
            await self.notifier.run(lambda: self.notifier.refresh_message(current))

    async def _ask_denial_reason(
        self, request_id: str, actor: Principal, trigger_id: str, channel: str, ts: str, response_url: str
    ) -> None:
        current = await self.workflow.requests.get_request(request_id)
        if current is None:
            return
        problem = rules.check_denial(self.workflow.policy, current, actor, self.workflow.now())
        if problem is not None:
            if problem.code == "not_pending":
                await self._show_current(request_id)
            await self._reply(response_url, f"Not denied: {problem.message}")
            return
        meta = json.dumps({"request": request_id, "channel": channel, "ts": ts})
        view = blocks.deny_modal(current, meta)
        await self.notifier.run(lambda: self.notifier.client.views_open(trigger_id=trigger_id, view=view))

    async def _inline(
        self, work: Coroutine[Any, Any, Any], later: Callable[[Any], Coroutine[Any, Any, None]]
    ) -> tuple[bool, Any]:
        """Run `work` for up to INLINE_SECONDS; if it takes longer, `later` gets its result."""
        task = self._spawn(work)
        try:
            return True, await asyncio.wait_for(asyncio.shield(task), INLINE_SECONDS)
        except TimeoutError:

            def done(t: asyncio.Task[Any]) -> None:
                if not t.cancelled() and t.exception() is None:
                    self._spawn(later(t.result()))

            task.add_done_callback(done)
            return False, None

    async def _submit_denial(self, view: dict[str, Any], user: str) -> web.StreamResponse:
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            request_id = str(meta["request"])
        except (ValueError, KeyError):
            return web.Response()
        reason = str(view_values(view).get(blocks.REASON_BLOCK) or "").strip()

        async def deny() -> WorkflowError | None:
            actor = await self._act_as(user)
            if actor is None:
                return WorkflowError("not_linked", "your Slack account is not linked to a principal")
            try:
                await self.workflow.deny(request_id, actor, reason)
            except WorkflowError as exc:
                if isinstance(exc, Conflict):
                    await self._show_current(request_id)
                return exc
            return None

        async def nothing(_: Any) -> None:
            return None

        finished, problem = await self._inline(deny(), nothing)
        if finished and problem is not None:
            return web.json_response(
                {"response_action": "errors", "errors": {blocks.REASON_BLOCK: problem.message[:150]}}
            )
        return web.Response()

    async def _submit_request(self, view: dict[str, Any], user: str) -> web.StreamResponse:
        values = view_values(view)

        async def ask() -> Outcome | WorkflowError:
            requester = await self._act_as(user)
            if requester is None:
                return WorkflowError("not_linked", "your Slack account is not linked to a principal")
            resource = str(values.get(blocks.RESOURCE_BLOCK) or "")
            ticked = values.get(blocks.TERMS_BLOCK) or []
            try:
                return await self.workflow.request_access(
                    requester,
                    resource,
                    values.get(blocks.ACTIONS_BLOCK) or [],
                    str(values.get(blocks.DURATION_BLOCK) or ""),
                    str(values.get(blocks.JUSTIFICATION_BLOCK) or ""),
                    accept_terms=blocks.accepted_terms(self.workflow.policy, resource, ticked),
                    via=Via.SLACK,
                )
            except WorkflowError as exc:
                return exc

        async def tell(result: Outcome | WorkflowError) -> None:
            text = (
                f"Request `{result.request.id}`: {result.message}"
                if isinstance(result, Outcome)
                else f"Your request was refused: {result.message}"
            )
            await self.notifier.run(lambda: self.notifier.dm_user(user, text))

        finished, result = await self._inline(ask(), tell)
        if not finished:
            return web.Response()
        if isinstance(result, WorkflowError):
            field = _FIELD_OF_CODE.get(result.code, blocks.RESOURCE_BLOCK)
            return web.json_response({"response_action": "errors", "errors": {field: result.message[:150]}})
        self._spawn(tell(result))
        return web.Response()

    async def _open_request_modal(self, user: str, trigger_id: str, response_url: str) -> None:
        requester = await self._act_as(user)
        if requester is None:
            await self._not_linked(response_url)
            return
        requestable = self.workflow.policy.requestable_by(requester)
        if not requestable:
            await self._reply(response_url, "There is nothing you may request access to.")
            return
        view = blocks.request_modal(requestable)
        await self.notifier.run(lambda: self.notifier.client.views_open(trigger_id=trigger_id, view=view))

    async def _list_grants(self, user: str, response_url: str) -> None:
        principal = await self._act_as(user)
        if principal is None:
            await self._not_linked(response_url)
            return
        found = await self.workflow.list_grants(principal, principal=principal.name, active=True)
        used = await usage_of(self.workflow.store, found)
        await self._reply(response_url, blocks.grants_text(principal.name, found, self.workflow.now(), used))


SLACK = web.AppKey("slack_interactions", SlackInteractions)


async def _interactions(request: web.Request) -> web.StreamResponse:
    return await request.app[SLACK].interactions(request)


async def _commands(request: web.Request) -> web.StreamResponse:
    return await request.app[SLACK].commands(request)


def install(app: web.Application, interactions: SlackInteractions) -> None:
    """Mount Slack's request URLs on the control listener: /slack/interactions and /slack/commands."""
    app[SLACK] = interactions
    app.router.add_post("/slack/interactions", _interactions)
    app.router.add_post("/slack/commands", _commands)

    async def closing(_app: web.Application) -> Any:
        yield
        with contextlib.suppress(Exception):
            await interactions.close()

    app.cleanup_ctx.append(closing)
