"""Counting the event loop's turns while some work runs, to tell work done in slices from one long pass."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest


class Turns:
    """How many times another task got to run so far."""

    count = 0


@contextlib.asynccontextmanager
async def counting_turns() -> AsyncIterator[Turns]:
    """A task that bumps the count each time the loop lets it run, for the duration of the block."""
    turns = Turns()

    async def other_work() -> None:
        while True:
            turns.count += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    try:
        yield turns
    finally:
        ticker.cancel()


@contextlib.asynccontextmanager
async def turns_at_each_call(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str
) -> AsyncIterator[list[int]]:
    """For the duration of the block, the other task's turn count at each call of `owner.name`: many
    distinct values mean the work was done in slices with the loop served in between."""
    seen: list[int] = []
    original = getattr(owner, name)
    async with counting_turns() as turns:

        def counting(*args: Any) -> Any:
            seen.append(turns.count)
            return original(*args)

        monkeypatch.setattr(owner, name, counting)
        yield seen
