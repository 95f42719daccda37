"""Gathers what an approver sees next to a request (the I/O around proxy/access/context.py): the requester's
groups from the store, their grants from the store, each grant's use from the audit store's usage view, and
the size of each prefix from the gateway's cached, bounded listing."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from proxy.access import context
from proxy.access.requests import AccessRequest
from proxy.audit.records import Usage
from proxy.audit.store import AuditStore
from proxy.s3.prefixsize import PrefixSizer
from proxy.workflow.service import Workflow


class ApproverContext:
    def __init__(self, workflow: Workflow, audit: AuditStore | None, sizer: PrefixSizer | None) -> None:
        self.workflow = workflow
        self.audit = audit
        self.sizer = sizer

    async def of(self, request: AccessRequest) -> dict[str, Any]:
        principal = await self.workflow.principal(request.requester)
        grants = await self.workflow.store.list_grants(principal=request.requester)
        past = context.past_grants(request, grants)
        usage, sizes = await asyncio.gather(self._usage(past), self._sizes(request))
        groups = sorted(principal.groups) if principal is not None else []
        return context.build(request, groups, past, usage, sizes, self.workflow.now())

    async def lines(self, request: AccessRequest) -> list[str]:
        return context.describe(await self.of(request))

    async def _usage(self, past: list[Any]) -> dict[str, Usage]:
        if self.audit is None:
            return {}
        found: dict[str, Usage] = {}
        for grant in past[: context.PAST_GRANTS_SHOWN]:
            usage = await self.audit.usage(grant.id)
            if usage is not None:
                found[grant.id] = usage
        return found

    async def _sizes(self, request: AccessRequest) -> list[context.PrefixSize]:
        if self.sizer is None:
            return []
        sizer = self.sizer
        return list(await asyncio.gather(*(sizer.size(p.bucket, p.prefix) for p in request.parts())))


APPROVER_CONTEXT = web.AppKey("approver_context", ApproverContext)
