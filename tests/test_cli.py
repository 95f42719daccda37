"""The `grantgate` command line, driven for real against a temporary config and SQLite database."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.cli import user_error

from proxy.cli import main
from proxy.identity.keys import derive_secret
from proxy.identity.sessions import open_session
from proxy.store.sql import SqlStore, head_revision

SECRET = "cli-test-server-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRANTGATE_CONFIG", "GRANTGATE_SECRET_KEY", "GRANTGATE_STORE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "grantgate.toml"
    path.write_text(
        f'[server]\nsecret_key = "{SECRET}"\ns3_port = 9555\n\n[store]\nurl = "sqlite:///state/grantgate.db"\n'
    )
    ok(path, "db", "upgrade")  # only `db upgrade` (and `serve`) create a database
    return path


def run(config: Path | None, *args: str) -> Result:
    prefix = ["--config", str(config)] if config is not None else []
    return CliRunner().invoke(main, [*prefix, *args])


def ok(config: Path, *args: str) -> Result:
    result = run(config, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def store_snapshot(config: Path):
    async def read():
        store = await SqlStore.open(f"sqlite:///{config.parent / 'state' / 'grantgate.db'}", upgrade=True)
        try:
            return await store.list_principals(), await store.list_grants()
        finally:
            await store.close()

    return asyncio.run(read())


# --- keys ---


def test_keys_create_prints_the_secret_once_with_usage_hints(config: Path) -> None:
    out = ok(config, "keys", "create", "alice", "--group", "ml", "--description", "laptop").stdout
    key_id = re.search(r"Access key id:\s+(GG[A-Z2-7]{18})", out)
    secret = re.search(r"Secret access key:\s+(\S{40})", out)
    assert key_id and secret
    assert secret.group(1) == derive_secret(SECRET.encode(), key_id.group(1))
    assert "aws configure set aws_access_key_id " + key_id.group(1) in out
    assert "http://127.0.0.1:9555" in out
    assert "boto3.client(" in out
    assert (config.parent / "state" / "grantgate.db").exists()  # relative to the config file


def test_keys_list_shows_keys_but_never_secrets(config: Path) -> None:
    created = json.loads(ok(config, "keys", "create", "alice", "--json").stdout)
    listing = ok(config, "keys", "list").stdout
    assert created["access_key_id"] in listing
    assert "alice" in listing and "active" in listing
    assert created["secret_access_key"] not in listing
    as_json = ok(config, "keys", "list", "--json").stdout
    assert created["secret_access_key"] not in as_json
    [entry] = json.loads(as_json)
    assert entry["access_key_id"] == created["access_key_id"]
    assert "secret_access_key" not in entry


def test_keys_create_json_records_groups_on_the_principal(config: Path) -> None:
    created = json.loads(
        ok(config, "keys", "create", "alice", "--group", "ml", "--group", "eng", "--json").stdout
    )
    assert created["groups"] == ["eng", "ml"]
    assert created["secret_access_key"] == derive_secret(SECRET.encode(), created["access_key_id"])
    principals, _ = store_snapshot(config)
    assert [(p.name, p.groups) for p in principals] == [("alice", {"ml", "eng"})]


def test_keys_revoke_marks_the_key_revoked(config: Path) -> None:
    created = json.loads(ok(config, "keys", "create", "alice", "--json").stdout)
    ok(config, "keys", "revoke", created["access_key_id"])
    [entry] = json.loads(ok(config, "keys", "list", "--json").stdout)
    assert entry["active"] is False and entry["revoked_at"]
    assert "revoked" in ok(config, "keys", "list").stdout


def test_keys_list_filters_by_principal(config: Path) -> None:
    a = json.loads(ok(config, "keys", "create", "alice", "--json").stdout)
    b = json.loads(ok(config, "keys", "create", "bob", "--json").stdout)
    listing = ok(config, "keys", "list", "--principal", "bob").stdout
    assert b["access_key_id"] in listing and a["access_key_id"] not in listing


def test_revoking_an_unknown_key_is_a_user_error(config: Path) -> None:
    user_error(run(config, "keys", "revoke", "GGNOSUCHKEYAAAAAAAAA"), "unknown access key")


def test_keys_session_issues_credentials_the_gateway_accepts(config: Path) -> None:
    ok(config, "keys", "create", "alice", "--group", "ml")
    creds = json.loads(ok(config, "keys", "session", "alice", "--ttl", "30m", "--json").stdout)
    assert creds["Version"] == 1
    claims = open_session(SECRET.encode(), creds["AccessKeyId"], creds["SessionToken"], now=datetime.now(UTC))
    assert claims.principal.name == "alice"
    assert claims.principal.groups == {"ml"}
    lifetime = claims.expires_at - claims.issued_at
    assert lifetime.total_seconds() == 30 * 60


def test_keys_session_prints_shell_exports(config: Path) -> None:
    ok(config, "keys", "create", "alice")
    out = ok(config, "keys", "session", "alice", "--ttl", "1h").stdout
    assert re.search(r"^export AWS_ACCESS_KEY_ID=GGT[A-Z2-7]{17}$", out, re.MULTILINE)
    assert re.search(r"^export AWS_SESSION_TOKEN=ggs1\.", out, re.MULTILINE)
    assert all(line.startswith(("#", "export ")) for line in out.strip().splitlines())


def test_keys_session_for_an_unknown_principal_is_a_user_error(config: Path) -> None:
    user_error(run(config, "keys", "session", "ghost", "--ttl", "1h"), "unknown principal 'ghost'")


def test_keys_session_refuses_lifetimes_over_a_week(config: Path) -> None:
    ok(config, "keys", "create", "alice")
    user_error(run(config, "keys", "session", "alice", "--ttl", "8d"), "too long")


# --- grants ---


def test_grants_add_list_revoke(config: Path) -> None:
    added = json.loads(
        ok(
            config,
            "grants",
            "add",
            "alice",
            "s3://models/llama/",
            "--actions",
            "read,list",
            "--duration",
            "2h",
            "--json",
        ).stdout
    )
    assert (added["bucket"], added["prefix"], added["actions"]) == ("models", "llama/", ["list", "read"])
    assert added["expires_at"] is not None
    assert added["created_by"].startswith("cli:")

    table = ok(config, "grants", "list").stdout
    row = next(line for line in table.splitlines() if line.startswith(added["id"]))
    assert "alice" in row and "s3://models/llama/" in row and "list,read" in row
    assert re.search(r"\b1h59m\b|\b2h\b", row)

    ok(config, "grants", "revoke", added["id"], "--reason", "done")
    assert added["id"] not in ok(config, "grants", "list").stdout
    everything = ok(config, "grants", "list", "--all").stdout
    revoked_row = next(line for line in everything.splitlines() if line.startswith(added["id"]))
    assert "revoked" in revoked_row
    [grant] = json.loads(ok(config, "grants", "list", "--all", "--json").stdout)
    assert grant["revoke_reason"] == "done"


def test_standing_grant_is_listed_as_standing(config: Path) -> None:
    ok(config, "keys", "create", "bob")
    result = ok(config, "grants", "add", "bob", "s3://data", "--actions", "write", "--standing")
    assert "standing" in result.stdout
    assert "has no access key" not in result.stderr
    assert "standing" in ok(config, "grants", "list", "--principal", "bob").stdout


def test_grant_for_a_principal_without_keys_warns_but_succeeds(config: Path) -> None:
    result = ok(config, "grants", "add", "carol", "s3://data/x/", "--actions", "read", "--duration", "1h")
    assert "has no access key yet" in result.stderr
    _, grants = store_snapshot(config)
    assert [g.principal for g in grants] == ["carol"]


def test_grants_list_filters_by_principal(config: Path) -> None:
    ok(config, "grants", "add", "alice", "s3://a/", "--actions", "read", "--standing")
    ok(config, "grants", "add", "bob", "s3://b/", "--actions", "read", "--standing")
    listing = ok(config, "grants", "list", "--principal", "bob").stdout
    assert "s3://b/" in listing and "s3://a/" not in listing


def test_grants_add_with_a_budget_shows_it_in_the_listing(config: Path) -> None:
    args = ["s3://models/llama/", "--actions", "read", "--duration", "2h"]
    budgeted = ["--max-bytes", "10GiB", "--max-objects", "4", "--single-use"]
    added = json.loads(ok(config, "grants", "add", "alice", *args, *budgeted, "--json").stdout)
    assert added["budget"] == {"max_bytes": 10 * 1024**3, "max_objects": 4, "single_use": True}
    assert added["usage"] == {"bytes": 0, "objects": 0}
    plain = ok(config, "grants", "add", "bob", *args, "--max-bytes", "500MB").stdout
    assert "budget: 476.8 MiB" in plain

    table = ok(config, "grants", "list").stdout.splitlines()
    assert table[0].split()[-1] == "BUDGET"
    row = next(line for line in table if line.startswith(added["id"]))
    assert row.endswith("0 B of 10 GiB, 0 of 4 objects, single-use")
    [listed] = json.loads(ok(config, "grants", "list", "--principal", "alice", "--json").stdout)
    assert listed["budget"] == added["budget"] and listed["usage"] == {"bytes": 0, "objects": 0}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-bytes", "10 gigs"], "invalid size '10 gigs'"),
        (["--max-bytes", "0"], "max_bytes must be a positive whole number"),
        (["--max-objects", "0"], "max_objects must be a positive whole number"),
    ],
)
def test_bad_budget_is_a_one_line_error(config: Path, args: list[str], fragment: str) -> None:
    user_error(
        run(config, "grants", "add", "alice", "s3://b/", "--actions", "read", "--standing", *args), fragment
    )
    assert store_snapshot(config)[1] == []


def test_revoking_an_unknown_grant_is_a_user_error(config: Path) -> None:
    user_error(run(config, "grants", "revoke", "g_nope"), "unknown grant")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["s3:/bucket", "--actions", "read", "--duration", "2h"], "s3://bucket/prefix"),
        (["s3://b/", "--actions", "read", "--duration", "2 hours"], "invalid duration"),
        (["s3://b/", "--actions", "read", "--duration", "0m"], "longer than zero"),
        (["s3://b/", "--actions", "fly", "--duration", "2h"], "unknown action"),
        (["s3://b/", "--actions", "read"], "exactly one of --duration"),
        (["s3://b/", "--actions", "read", "--duration", "2h", "--standing"], "exactly one of --duration"),
    ],
)
def test_bad_grant_input_is_a_one_line_error(config: Path, args: list[str], fragment: str) -> None:
    user_error(run(config, "grants", "add", "alice", *args), fragment)
    _, grants = store_snapshot(config)
    assert grants == []


# --- config and db ---


def test_missing_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    user_error(run(tmp_path / "nope.toml", "keys", "list"), "config file not found")


def test_config_is_also_taken_from_the_environment(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRANTGATE_CONFIG", str(config))
    result = CliRunner().invoke(main, ["keys", "create", "alice", "--json"])
    assert result.exit_code == 0, result.output
    assert (config.parent / "state" / "grantgate.db").exists()


def test_missing_server_secret_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "nosecret.toml"
    path.write_text('[store]\nurl = "sqlite:///gg.db"\n')
    user_error(run(path, "keys", "create", "alice"), "GRANTGATE_SECRET_KEY")


def test_invalid_config_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\ns3_port = 'many'\n")
    user_error(run(path, "grants", "list"), "s3_port")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])  # noqa: S104
def test_serve_refuses_dev_login_off_loopback(tmp_path: Path, host: str) -> None:
    path = tmp_path / "dev.toml"
    path.write_text(
        f'[server]\nsecret_key = "{SECRET}"\ns3_port = 0\ncontrol_host = "{host}"\ncontrol_port = 0\n'
        '[store]\nurl = "sqlite:///gg.db"\n[web]\ndev_login = true\n'
    )
    # A subprocess: on a gateway that wrongly starts, the timeout ends the test (and the gateway).
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "--config", str(path), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "dev_login" in lines[0] and "loopback" in lines[0], done.stderr
    assert not (tmp_path / "gg.db").exists()


def test_unsupported_store_url_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "mysql.toml"
    path.write_text('[store]\nurl = "mysql://u@h/db"\n')
    user_error(run(path, "grants", "list"), "unsupported store URL scheme")


def test_db_current_then_upgrade(tmp_path: Path) -> None:
    config = tmp_path / "fresh.toml"
    config.write_text('[store]\nurl = "sqlite:///fresh.db"\n')
    assert "none (empty database)" in ok(config, "db", "current").stdout
    assert not (tmp_path / "fresh.db").exists()  # looking did not create it
    head = head_revision()
    assert f"revision {head} (head)" in ok(config, "db", "upgrade").stdout
    assert ok(config, "db", "current").stdout.strip() == f"{head} (head)"


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "list"],
        ["keys", "create", "alice"],
        ["grants", "list"],
        ["tokens", "list"],
        ["audit"],
        ["audit", "verify"],
    ],
)
def test_no_command_but_db_upgrade_creates_a_database(tmp_path: Path, args: list[str]) -> None:
    config = tmp_path / "fresh.toml"
    config.write_text(f'[server]\nsecret_key = "{SECRET}"\n[store]\nurl = "sqlite:///fresh.db"\n')
    user_error(run(config, *args), f"no database at {tmp_path / 'fresh.db'}: create it with")
    assert not (tmp_path / "fresh.db").exists()


# --- serve and demo hand over to the app ---


def test_serve_runs_the_server_with_the_loaded_settings(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    fake = types.ModuleType("proxy.workers")
    fake.run_server = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "proxy.workers", fake)
    ok(config, "serve")
    [settings] = calls
    assert settings.server.s3_port == 9555  # type: ignore[attr-defined]


def test_demo_passes_its_options_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, object]] = []
    fake = types.ModuleType("proxy.demo")
    fake.run_demo = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "proxy.demo", fake)
    out = tmp_path / "creds.json"
    result = CliRunner().invoke(main, ["demo", "--s3-port", "9100", "--credentials-out", str(out)])
    assert result.exit_code == 0, result.output
    assert calls == [{"s3_port": 9100, "api_port": 9001, "state_dir": Path(".demo"), "credentials_out": out}]


def test_python_dash_m_proxy_is_the_grantgate_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: grantgate" in done.stdout
    for command in ("serve", "demo", "db", "keys", "grants"):
        assert command in done.stdout
