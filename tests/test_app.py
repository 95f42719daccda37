"""Process-level setup of a serving gateway."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from proxy.app import settle_heap


@pytest.fixture
def collector_held() -> Iterator[None]:
    """No automatic collection during the test, so only settle_heap can free the cycle; the frozen heap is
    handed back to the collector afterwards, so the rest of the session is unaffected."""
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


class Node:
    peer: Node


@pytest.mark.usefixtures("collector_held")
def test_settle_heap_frees_garbage_before_freezing_the_rest() -> None:
    garbage = Node()
    garbage.peer = garbage  # a cycle: only the cyclic collector can free it
    gone = weakref.ref(garbage)
    kept = Node()
    kept.peer = kept
    del garbage

    settle_heap()

    assert gone() is None, "garbage was frozen instead of freed"
    assert gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects()), "live objects stay where full collections walk"
