"""A local stand-in for Slack: the Web API methods GrantGate calls, and Slack's signed requests to the app."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

TOKEN = "xoxb-test-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@dataclass
class Call:
    method: str
    args: dict[str, Any]


@dataclass
class FakeSlack:
    """Records every call; `users` are Slack user objects by id, as users.info returns them."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    server: TestServer | None = None
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response_url)
        return app

    async def start(self) -> str:
        self.server = TestServer(self.app(), host="127.0.0.1")
        await self.server.start_server()
        return str(self.server.make_url("/"))

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def response_url(self, name: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/response/{name}"))

    def of(self, method: str) -> list[dict[str, Any]]:
        return [c.args for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(method)) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.of(method)

    async def wait_reply(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.replies) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.replies

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        return args

    async def _api(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        method = request.match_info["method"]
        args = await self._args(request)
        self.calls.append(Call(method, args))
        self.changed.set()
        return web.json_response(self._answer(method, args))

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            return {"ok": True, "channel": args["channel"], "ts": ts, "message": {"ts": ts}}
        if method == "chat.update":
            return {"ok": True, "channel": args["channel"], "ts": args["ts"]}
        if method == "views.open":
            return {"ok": True, "view": {"id": "V0001", **args["view"]}}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(args["users"])}}
        if method == "users.info":
            user = self.users.get(str(args.get("user")))
            return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if method == "users.lookupByEmail":
            for user in self.users.values():
                if (user.get("profile") or {}).get("email") == args.get("email"):
                    return {"ok": True, "user": user}
            return {"ok": False, "error": "users_not_found"}
        return {"ok": False, "error": "unknown_method"}

    async def _response_url(self, request: web.Request) -> web.Response:
        self.replies.append({"id": request.match_info["id"], **(await request.json())})
        self.changed.set()
        return web.Response(text="ok")


def slack_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Slack's v0 scheme, written out here independently of slack-sdk."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


async def send_signed(
    session: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
) -> aiohttp.ClientResponse:
    """POST a form the way Slack does: urlencoded body, X-Slack-Request-Timestamp and X-Slack-Signature."""
    body = urlencode(form).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature or slack_signature(secret, ts, body),
    }
    resp = await session.post(url, data=body, headers=headers)
    await resp.read()
    return resp


def button_payload(
    user: str, action_id: str, request_id: str, channel: str, ts: str, response_url: str
) -> dict[str, str]:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0001"},
        "team": {"id": "T0001", "domain": "example"},
        "api_app_id": "A0001",
        "trigger_id": f"trigger-{user}-{action_id}",
        "response_url": response_url,
        "channel": {"id": channel, "name": "access-requests"},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "message": {"type": "message", "ts": ts, "text": "access request"},
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": f"decide:{request_id}",
                "value": request_id,
                "action_ts": str(time.time()),
            }
        ],
    }
    return {"payload": json.dumps(payload)}


def view_submission(
    user: str, callback_id: str, values: dict[str, Any], metadata: str = ""
) -> dict[str, str]:
    payload = {
        "type": "view_submission",
        "user": {"id": user, "team_id": "T0001"},
        "team": {"id": "T0001"},
        "view": {
            "id": "V0001",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": metadata,
            "state": {"values": values},
        },
    }
    return {"payload": json.dumps(payload)}
