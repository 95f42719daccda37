"""Who is calling the JSON API: the principal behind an API token, with its groups as stored now."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.identity.principals import Principal
from proxy.workflow.context import WorkflowContext


@dataclass(frozen=True, slots=True)
class Tokens:
    ctx: WorkflowContext

    async def authenticate(self, token: str) -> Principal | None:
        return await self.ctx.requests.principal_for_token(token)
