"""The data plane's long-lived parts, built once per process and shared by every S3 request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web

from proxy.config import Settings
from proxy.observe.events import EventBus
from proxy.s3.upstream import Upstream
from proxy.state import LiveState


@dataclass
class Gateway:
    settings: Settings
    state: LiveState
    upstream: Upstream
    bus: EventBus

    @property
    def max_skew(self) -> timedelta:
        return timedelta(seconds=self.settings.server.max_clock_skew_seconds)

    def signed_host(self, request: web.Request) -> str:
        """The Host the client signed: X-Forwarded-Host only from a configured, trusted proxy."""
        forwarded = request.headers.get("X-Forwarded-Host")
        if forwarded and request.remote in self.settings.server.trusted_proxies:
            return forwarded.split(",")[0].strip()
        return request.headers.get("Host", "")
