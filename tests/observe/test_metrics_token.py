"""/metrics behind a bearer token, on the control listener's route and on a listener of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.config import ConfigError, Settings
from proxy.live_state import LiveState
from proxy.observe.events import EventBus
from proxy.observe.metrics import bearer_matches
from proxy.observe.observers import install_metrics, metrics_listener, observing
from proxy.store.sql import SqlStore

TOKEN = "scrape-token-0123456789abcdef"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(f"sqlite:///{tmp_path / 'gg.db'}", upgrade=True)
    yield opened
    await opened.close()


def observed(settings: Settings, store: SqlStore, state: LiveState) -> Any:
    return observing(
        settings.observe(),
        settings.policy.build(),
        store,
        state,
        EventBus(),
        spool_dir=settings.audit_spool_dir(),
        metrics_token=settings.metrics_token(),
    )


def settings_with_token(tmp_path: Path, port: int) -> Settings:
    (tmp_path / "metrics-token").write_text(TOKEN + "\n")
    return Settings.model_validate(
        {"base_dir": tmp_path, "metrics": {"port": port, "token_file": "metrics-token"}}
    )


async def statuses(url: str) -> dict[str, int]:
    asked = {
        "none": {},
        "wrong": {"Authorization": "Bearer " + TOKEN[:-1] + "x"},
        "basic": {"Authorization": "Basic " + TOKEN},
        "right": {"Authorization": "Bearer " + TOKEN},
    }
    out = {}
    async with aiohttp.ClientSession() as http:
        for name, headers in asked.items():
            async with http.get(url, headers=headers) as resp:
                body = await resp.text()
                out[name] = resp.status
                assert (resp.status == 200) == ("grantgate_" in body)
    return out


async def test_metrics_need_the_bearer_token_on_both_listeners(
    store: SqlStore, unused_tcp_port: int, tmp_path: Path
) -> None:
    settings = settings_with_token(tmp_path, unused_tcp_port)
    state = LiveState(store, b"k" * 32, interval=1, grace=30)
    await state.refresh(force=True)
    async with observed(settings, store, state) as obs, metrics_listener(obs):
        control = web.Application()
        install_metrics(control, obs)
        server = TestServer(control, host="127.0.0.1")
        await server.start_server()
        try:
            on_control = await statuses(str(server.make_url("/metrics")))
        finally:
            await server.close()
        on_its_own = await statuses(f"http://127.0.0.1:{unused_tcp_port}/metrics")
    expected = {"none": 401, "wrong": 401, "basic": 401, "right": 200}
    assert on_control == expected and on_its_own == expected


def test_the_environment_token_wins_and_a_missing_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_with_token(tmp_path, 0)
    assert settings.metrics_token() == TOKEN
    monkeypatch.setenv("GRANTGATE_METRICS_TOKEN", "from-the-environment")
    assert settings.metrics_token() == "from-the-environment"
    monkeypatch.delenv("GRANTGATE_METRICS_TOKEN")
    missing = Settings.model_validate({"base_dir": tmp_path, "metrics": {"token_file": "nope"}})
    with pytest.raises(ConfigError, match="token_file"):
        missing.metrics_token()
    assert Settings().metrics_token() == ""


def test_bearer_comparison() -> None:
    assert bearer_matches("Bearer abc", "abc") and bearer_matches("bearer  abc ", "abc")
    assert not bearer_matches("Bearer abd", "abc") and not bearer_matches(None, "abc")
    assert not bearer_matches("Bearer", "abc") and not bearer_matches("abc", "abc")
