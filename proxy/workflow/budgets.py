"""Budgets as the control plane shows them: what each budgeted grant has moved so far."""

from __future__ import annotations

from collections.abc import Iterable

from proxy.access.budgets import Usage
from proxy.access.grants import Grant
from proxy.store.budgets import BudgetLedger
from proxy.store.sql import SqlStore


async def usage_of(store: SqlStore, grants: Iterable[Grant]) -> dict[str, Usage]:
    """Usage per grant id, for the grants that carry a budget (the others are never counted)."""
    ids = [g.id for g in grants if g.budget is not None]
    return await BudgetLedger(store).usage(ids) if ids else {}
