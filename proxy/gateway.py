"""The data plane's long-lived parts, built once per process and shared by every S3 request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from aiohttp import web

from proxy.access.decoys import DecoySet
from proxy.access.networks import NetworkRules
from proxy.access.policy import Policy
from proxy.config import Settings
from proxy.live_state import LiveState
from proxy.observe.events import EventBus
from proxy.s3.conditional import ConditionalWrites
from proxy.s3.upstream import Upstream
from proxy.store.budgets import BudgetLedger
from proxy.store.sql import SqlStore


@dataclass
class Gateway:
    settings: Settings
    policy: Policy  # built once at start from settings.policy
    state: LiveState
    upstream: Upstream
    bus: EventBus
    # The store the state is loaded from, for the services around the data plane (workflow, observers).
    store: SqlStore

    @cached_property
    def networks(self) -> NetworkRules:
        return NetworkRules(self.policy)

    @cached_property
    def ledger(self) -> BudgetLedger:
        return BudgetLedger(self.store)

    @cached_property
    def decoys(self) -> DecoySet:
        return self.settings.policy.decoys()

    @cached_property
    def conditional_writes(self) -> ConditionalWrites:
        return ConditionalWrites(self.upstream)

    @property
    def max_skew(self) -> timedelta:
        return timedelta(seconds=self.settings.server.max_clock_skew_seconds)

    def signed_host(self, request: web.BaseRequest) -> str:
        """The Host the client signed: X-Forwarded-Host only from a configured, trusted proxy."""
        forwarded = request.headers.get("X-Forwarded-Host")
        if forwarded and request.remote in self.settings.server.trusted_proxies:
            return forwarded.split(",")[0].strip()
        return request.headers.get("Host", "")

    def client_address(self, request: web.BaseRequest) -> str:
        """The caller's address: behind a trusted proxy, the last X-Forwarded-For hop it added."""
        remote = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and remote in self.settings.server.trusted_proxies:
            hops = [h.strip() for h in forwarded.split(",") if h.strip()]
            untrusted = [h for h in hops if h not in self.settings.server.trusted_proxies]
            if untrusted:
                return untrusted[-1]
        return remote
