"""On call approves at once: who is on call for a rule's PagerDuty service, read from its REST API and
cached; any failure to find out fails closed to normal approval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import structlog

from proxy.access import policy as rules
from proxy.access.oncall import PagerDutySettings, UnexpectedAnswer, escalation_policy_of, principals_on_call
from proxy.access.policy import Ask, Policy

log = structlog.get_logger("grantgate.oncall")

MAX_PAGES = 10  # 100 on-calls a page: more than any escalation policy's first levels hold
ACCEPT = "application/vnd.pagerduty+json;version=2"


class PagerDutyOnCall:
    def __init__(self, settings: PagerDutySettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def judged(self, policy: Policy, ask: Ask) -> Ask:
        """`ask`, with `on_call` set when its rule names a service the requester is on call for."""
        service = rules.oncall_service(policy, ask)
        if not service:
            return ask
        return replace(ask, on_call=ask.requester.name in await self.on_call(service))

    async def on_call(self, service: str) -> frozenset[str]:
        """The principals on call for `service`; empty when PagerDuty cannot say (fail closed)."""
        async with self._locks.setdefault(service, asyncio.Lock()):  # one lookup at a time per service
            cached = self._cache.get(service)
            if cached is not None and self._clock() - cached[0] < self.settings.cache_seconds:
                return cached[1]
            try:
                found = await self._lookup(service)
            except (aiohttp.ClientError, TimeoutError, UnexpectedAnswer, ValueError) as exc:
                log.warning("pagerduty_unavailable", service=service, error=str(exc) or type(exc).__name__)
                return frozenset()
            self._cache[service] = (self._clock(), found)
            return found

    async def _lookup(self, service: str) -> frozenset[str]:
        headers = {"Authorization": f"Token token={self.settings.api_token()}", "Accept": ACCEPT}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        base = self.settings.api_url.rstrip("/")
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            policy_id = escalation_policy_of(await _get(session, f"{base}/services/{service}", {}))
            found: set[str] = set()
            for page in range(MAX_PAGES):
                query = {
                    "escalation_policy_ids[]": policy_id,
                    "include[]": "users",
                    "time_zone": "UTC",
                    "limit": "100",
                    "offset": str(page * 100),
                }
                answer = await _get(session, f"{base}/oncalls", query)
                found |= principals_on_call(answer, self.settings)
                if not answer.get("more"):
                    break
        return frozenset(found)


async def _get(session: aiohttp.ClientSession, url: str, query: dict[str, str]) -> dict[str, Any]:
    async with session.get(url, params=query) as response:
        if response.status != 200:
            raise UnexpectedAnswer(f"HTTP {response.status} from {url}")
        body = await response.json(content_type=None)
    if not isinstance(body, dict):
        raise UnexpectedAnswer(f"{url} did not answer a JSON object")
    return body
