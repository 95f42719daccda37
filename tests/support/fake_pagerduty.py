"""A local stand-in for PagerDuty's REST API (v2): `GET /services/{id}` and `GET /oncalls`, in the shapes
PagerDuty documents, behind `Authorization: Token token=...`. Runs in its own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

TOKEN = "pd-e2e-0123456789"


def oncall_entry(user_id: str, email: str, policy: str, level: int = 1) -> dict[str, Any]:
    return {
        "user": {
            "id": user_id,
            "type": "user",
            "summary": email.split("@")[0],
            "email": email,
            "self": f"https://api.pagerduty.com/users/{user_id}",
        },
        "escalation_policy": {"id": policy, "type": "escalation_policy_reference", "summary": "ML platform"},
        "schedule": {"id": "PSCHED1", "type": "schedule_reference", "summary": "ML primary"},
        "escalation_level": level,
        "start": "2026-01-01T00:00:00Z",
        "end": "2099-01-01T00:00:00Z",
    }


@dataclass
class FakePagerDuty:
    services: dict[str, str] = field(default_factory=dict)  # service id -> escalation policy id
    oncalls: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False  # answer 503, as an outage would
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/services/{id}", self._service)
        app.router.add_get("/oncalls", self._oncalls)
        return app

    def _refusal(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, dict(request.query)))
        if self.down:
            return web.json_response({"error": {"message": "unavailable"}}, status=503)
        if request.headers.get("Authorization") != f"Token token={TOKEN}":
            return web.json_response({"error": {"message": "Unauthorized", "code": 2006}}, status=401)
        return None

    async def _service(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        policy = self.services.get(request.match_info["id"])
        if policy is None:
            return web.json_response({"error": {"message": "Not Found", "code": 2100}}, status=404)
        return web.json_response(
            {"service": {"id": request.match_info["id"], "escalation_policy": {"id": policy}}}
        )

    async def _oncalls(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        wanted = request.query.getall("escalation_policy_ids[]", [])
        found = [o for o in self.oncalls if o["escalation_policy"]["id"] in wanted]
        offset, limit = int(request.query.get("offset", 0)), int(request.query.get("limit", 25))
        page = found[offset : offset + limit]
        more = offset + limit < len(found)
        return web.json_response(
            {"oncalls": page, "limit": limit, "offset": offset, "more": more, "total": None}
        )


@contextmanager
def running_pagerduty() -> Iterator[FakePagerDuty]:
    fake = FakePagerDuty()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = TestServer(fake.app(), host="127.0.0.1")
    asyncio.run_coroutine_threadsafe(server.start_server(), loop).result(10)
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
