"""`grantgate init`, `tokens` and the API commands' own errors (the API journey is in tests/e2e)."""

from __future__ import annotations

import asyncio
import json
import stat
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.cli import user_error

from proxy.cli import main
from proxy.config import load_settings
from proxy.identity.tokens import ApiToken
from proxy.store.sql import SqlStore
from proxy.store.workflow import WorkflowStore

SECRET = "cli-test-server-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("GRANTGATE_CONFIG", "GRANTGATE_SECRET_KEY", "GRANTGATE_STORE_URL", "GRANTGATE_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GRANTGATE_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "grantgate.toml"
    path.write_text(
        f'[server]\nsecret_key = "{SECRET}"\npublic_url = "http://gg.example:9001"\n\n'
        '[store]\nurl = "sqlite:///state/grantgate.db"\n'
    )
    ok("--config", str(path), "db", "upgrade")
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


# --- init ---


@pytest.mark.parametrize("preset", ["small", "growing", "large"])
def test_init_writes_a_config_that_loads_and_a_private_key_file(tmp_path: Path, preset: str) -> None:
    out = tmp_path / "etc" / "gg.toml"
    result = ok("init", "--preset", preset, "--out", str(out), "--bucket", "acme-models")
    assert str(out) in result.stdout
    settings = load_settings(out)
    assert settings.policy.build().rules
    key_file = tmp_path / "etc" / "gg.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(settings.server_key()) >= 32
    assert "s3://acme-models/" in out.read_text()


@pytest.mark.parametrize("preset", ["small", "growing", "large"])
def test_init_writes_sign_in_slack_audit_and_metrics_and_says_what_is_left(
    tmp_path: Path, preset: str
) -> None:
    out = tmp_path / "gg.toml"
    result = ok("init", "--preset", preset, "--out", str(out), "--bucket", "acme-models")
    text = out.read_text()
    for section in ("[web]", "[web.oidc]", "[web.trusted_headers]", "[slack]", "[audit]", "[metrics]"):
        assert f"\n{section}\n" in text, section
    settings = load_settings(out)
    assert settings.audit.enabled and settings.metrics.enabled and not settings.slack.enabled
    assert "/signin/oidc/callback" in text
    hint = result.stdout.split("next:", 1)[1]
    for left in (
        "[upstream]",
        "[policy]",
        "[web.oidc] issuer and client_id",
        "[slack]",
        "db upgrade",
        "serve",
    ):
        assert left in hint, left


@pytest.mark.parametrize("preset", ["small", "growing", "large"])
def test_no_preset_hands_out_weights_or_data_without_a_second_person(preset: str) -> None:
    """A product that stops leaks: outside the named instant groups (infra, ml-platform), every rule
    needs an approval, and nothing is held instantly for longer than a working day."""
    from proxy.access.policy_config import PolicySettings
    from proxy.access.presets import render_preset

    raw = tomllib.loads(render_preset(preset, bucket="acme-models"))
    for rule in PolicySettings.model_validate(raw["policy"]).build().rules:
        assert "*" not in rule.instant_groups, rule
        if "*" in rule.requester_groups:
            assert rule.approvals_required >= 1, rule
        if rule.instant_groups or rule.approvals_required == 0:
            assert rule.max_duration <= timedelta(hours=8), rule


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "grantgate.toml"
    out.write_text("# mine\n")
    user_error(run("init", "--preset", "small", "--out", str(out)), "already exists")
    assert out.read_text() == "# mine\n"
    ok("init", "--preset", "small", "--out", str(out), "--force")
    assert "[policy]" in out.read_text()


def test_init_prints_to_stdout_with_dash() -> None:
    result = ok("init", "--preset", "growing", "--out", "-")
    assert result.stdout.startswith('# GrantGate configuration: the "growing" preset')
    assert 'instant_groups = ["infra"]' in result.stdout


def test_init_rejects_a_bad_bucket_name(tmp_path: Path) -> None:
    user_error(
        run("init", "--preset", "small", "--out", str(tmp_path / "x.toml"), "--bucket", 'a"b'), "bucket"
    )


# --- tokens ---


def _store_tokens(config: Path) -> list[ApiToken]:
    async def read() -> list[ApiToken]:
        store = await SqlStore.open(f"sqlite:///{config.parent / 'state' / 'grantgate.db'}", upgrade=True)
        try:
            return await WorkflowStore(store).list_tokens()
        finally:
            await store.close()

    return asyncio.run(read())


def test_tokens_create_prints_the_token_once_and_stores_only_a_hash(config: Path) -> None:
    out = ok("--config", str(config), "tokens", "create", "alice", "--group", "ml").stdout
    token = next(line.strip() for line in out.splitlines() if line.strip().startswith("ggt_"))
    assert "export GRANTGATE_API_URL=http://gg.example:9001" in out
    [stored] = _store_tokens(config)
    assert stored.principal == "alice" and stored.active
    assert token not in (config.parent / "state" / "grantgate.db").read_bytes().decode("latin-1")


def test_tokens_list_and_revoke(config: Path) -> None:
    created = json.loads(ok("--config", str(config), "tokens", "create", "bob", "--json").stdout)
    assert created["token"].startswith("ggt_") and created["principal"] == "bob"
    listed = json.loads(ok("--config", str(config), "tokens", "list", "--json").stdout)
    assert [(t["id"], t["active"]) for t in listed] == [(created["id"], True)]
    assert "token" not in listed[0]
    assert created["id"] in ok("--config", str(config), "tokens", "list").stdout
    ok("--config", str(config), "tokens", "revoke", created["id"])
    listed = json.loads(ok("--config", str(config), "tokens", "list", "--json").stdout)
    assert listed[0]["active"] is False
    user_error(run("--config", str(config), "tokens", "revoke", "nope"), "unknown API token")


# --- API commands without a usable API ---


def test_api_commands_say_how_to_configure_the_address() -> None:
    user_error(run("whoami"), "GRANTGATE_API_URL")


def test_api_commands_say_how_to_get_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRANTGATE_API_URL", "http://127.0.0.1:9")
    user_error(run("requests"), "grantgate tokens create")


def test_unreachable_api_is_one_readable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRANTGATE_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GRANTGATE_TOKEN", "ggt_x")
    user_error(run("request", "models", "-j", "because I need it"), "cannot reach the GrantGate API")


def test_the_server_configs_public_url_is_the_fallback_address(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRANTGATE_TOKEN", "ggt_x")
    user_error(run("--config", str(config), "whoami"), "http://gg.example:9001")


def test_help_lists_the_access_commands() -> None:
    out = ok("--help").stdout
    for command in (
        "init",
        "tokens",
        "login",
        "whoami",
        "request",
        "requests",
        "approve",
        "deny",
        "revoke",
        "mine",
    ):
        assert f"\n  {command} " in out, command
