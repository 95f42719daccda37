"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import secrets

import pytest


@pytest.fixture
def unique() -> str:
    """A fresh suffix for names, so tests sharing one world never touch each other's keys or people."""
    return secrets.token_hex(4)


@pytest.fixture(params=[False, True], ids=["http", "https"])
def tls(request: pytest.FixtureRequest) -> bool:
    """Run the test once over plain HTTP and once over HTTPS."""
    return bool(request.param)
