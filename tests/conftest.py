"""Fixtures shared by the whole suite: one real world (bucket, gateways, store) per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.world import World, running_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("world")) as w:
        yield w
