"""The event bus: `emit_later` costs a request a list append; observers get a loop turn's events together."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.observe.events import EventBus


class Batches:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def __call__(self, event: Any) -> None:
        self.batches.append([event])

    def observe_batch(self, events: list[Any]) -> None:
        self.batches.append(list(events))


async def test_events_of_one_loop_turn_reach_observers_together_after_the_turn() -> None:
    bus, batches, each = EventBus(), Batches(), []
    bus.subscribe(batches)
    bus.subscribe(each.append)
    for n in range(3):
        bus.emit_later(n)
    assert batches.batches == [] and each == []  # nothing rendered on the request's path
    await asyncio.sleep(0)
    assert batches.batches == [[0, 1, 2]]
    assert each == [0, 1, 2]
    bus.emit_later(3)
    await asyncio.sleep(0)
    assert batches.batches == [[0, 1, 2], [3]]


async def test_a_failing_observer_is_counted_and_the_others_still_get_the_batch() -> None:
    bus, batches = EventBus(), Batches()

    def broken(_event: Any) -> None:
        raise RuntimeError("observer bug")

    bus.subscribe(broken)
    bus.subscribe(batches)
    bus.emit_later("a")
    bus.emit_later("b")
    await asyncio.sleep(0)
    assert batches.batches == [["a", "b"]]
    assert bus.failures == 2  # once per event for a plain observer


async def test_flush_delivers_what_is_queued_at_once() -> None:
    bus, batches = EventBus(), Batches()
    bus.subscribe(batches)
    bus.emit_later("last")
    bus.flush()  # as the observers stop
    assert batches.batches == [["last"]]
    await asyncio.sleep(0)
    assert batches.batches == [["last"]]


def test_without_a_running_loop_events_are_delivered_at_once() -> None:
    bus, batches = EventBus(), Batches()
    bus.subscribe(batches)
    bus.emit_later("cli")
    assert batches.batches == [["cli"]]
