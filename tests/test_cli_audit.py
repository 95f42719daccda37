"""`grantgate audit`: listing, export, verify (catching edits and deletions), usage and suspensions."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.cli import user_error
from support.world import run_sync

from proxy.access.grants import Action
from proxy.audit.records import AuditRecord, Usage
from proxy.audit.store import AuditStore
from proxy.cli import main
from proxy.store.sql import SqlStore
from proxy.store.suspensions import GrantSuspensions

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRANTGATE_CONFIG", "GRANTGATE_SECRET_KEY", "GRANTGATE_STORE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "grantgate.toml"
    path.write_text('[store]\nurl = "sqlite:///grantgate.db"\n')
    return path


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def database(config: Path) -> Path:
    return config.parent / "grantgate.db"


def seed(config: Path) -> str:
    """Five request events and one alert, with usage for one grant; returns the grant id."""

    async def write() -> str:
        store = await SqlStore.open(f"sqlite:///{database(config)}", upgrade=True)
        try:
            grant = await store.add_grant(
                "alice",
                "archive",
                "models/",
                frozenset({Action.READ}),
                now=NOW,
                expires_at=NOW + timedelta(hours=1),
            )
            audit = AuditStore(store)
            records = [
                AuditRecord(
                    "s3_request",
                    "data",
                    NOW - timedelta(minutes=10 - i),
                    principal="alice" if i % 2 == 0 else "bob",
                    target=f"s3://archive/models/{i}",
                    grant_id=grant.id if i % 2 == 0 else None,
                    decision="allow" if i % 2 == 0 else "deny",
                    event={"operation": "GetObject", "i": i},
                )
                for i in range(5)
            ]
            records.append(
                AuditRecord("anomaly.exfiltration", "alert", NOW, "alice", event={"message": "too much read"})
            )
            usage = Usage(grant.id, "alice", 3, 3, 3_000_000, 0, 0, NOW - timedelta(minutes=10), NOW)
            await audit.append(records, [usage])
            return grant.id
        finally:
            await store.close()

    return run_sync(write())


def test_audit_lists_recent_events_filtered(config: Path) -> None:
    seed(config)
    result = run(config, "audit", "--principal", "bob")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["SEQ", "TIME", "(UTC)", "KIND"]
    assert [line.split()[0] for line in lines[1:]] == ["2", "4"]
    assert all("bob" in line and "deny" in line for line in lines[1:])


def test_audit_json_is_one_event_per_line(config: Path) -> None:
    seed(config)
    result = run(config, "audit", "--decision", "allow", "--json")
    events = [json.loads(line) for line in result.output.splitlines()]
    assert [e["seq"] for e in events] == [1, 3, 5]
    assert all(e["principal"] == "alice" and len(e["hash"]) == 64 for e in events)


def test_export_writes_every_match_as_json_lines(config: Path, tmp_path: Path) -> None:
    seed(config)
    out = tmp_path / "siem.jsonl"
    result = run(config, "audit", "export", "--kind", "anomaly.", "--output", str(out))
    assert result.exit_code == 0, result.output
    [event] = [json.loads(line) for line in out.read_text().splitlines()]
    assert event["kind"] == "anomaly.exfiltration" and event["event"]["message"] == "too much read"


def test_verify_passes_on_an_intact_trail(config: Path) -> None:
    seed(config)
    result = run(config, "audit", "verify")
    assert result.exit_code == 0
    assert "intact: 6 events" in result.output


def test_verify_fails_and_names_an_edited_row(config: Path) -> None:
    seed(config)
    with sqlite3.connect(database(config)) as db:
        db.execute("UPDATE audit_events SET principal = 'nobody' WHERE seq = 3")
    result = run(config, "audit", "verify")
    assert result.exit_code == 1
    assert "BROKEN at event 3" in result.output and "altered" in result.output


def test_verify_fails_and_names_a_deleted_row(config: Path) -> None:
    seed(config)
    with sqlite3.connect(database(config)) as db:
        db.execute("DELETE FROM audit_events WHERE seq = 4")
    result = run(config, "audit", "verify", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False and report["checked"] == 3
    assert report["first_broken"]["seq"] == 5 and "event 4 is missing" in report["first_broken"]["problem"]


def test_usage_shows_what_was_done_under_a_grant(config: Path) -> None:
    grant_id = seed(config)
    result = run(config, "audit", "usage", grant_id, "--json")
    usage = json.loads(result.output)
    assert (usage["requests"], usage["objects_read"], usage["bytes_read"]) == (3, 3, 3_000_000)
    text = run(config, "audit", "usage", grant_id).output
    assert "3 objects, 3000000 bytes" in text


def test_history_shows_who_had_access_from_the_database(config: Path) -> None:
    grant_id = seed(config)
    result = run(config, "audit", "history", "s3://archive/models/7.bin", "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["grants"]
    assert [(g["grant_id"], g["principal"], g["bytes_read"]) for g in found] == [
        (grant_id, "alice", 3_000_000)
    ]
    text = run(config, "audit", "history", "s3://archive/models/", "--since", "1h").output
    assert text.splitlines()[0].split()[:3] == ["PRINCIPAL", "GRANT", "FROM"]
    assert grant_id in text and "2.9 MiB" in text
    assert "nobody held a grant" in run(config, "audit", "history", "s3://archive/data/").output
    user_error(run(config, "audit", "history", "no-such-resource"), "no resource named 'no-such-resource'")


def test_a_suspended_grant_is_listed_and_resumed(config: Path) -> None:
    grant_id = seed(config)

    async def suspend() -> None:
        store = await SqlStore.open(f"sqlite:///{database(config)}")
        try:
            await GrantSuspensions(store).suspend_grant(grant_id, reason="anomaly exfiltration", now=NOW)
        finally:
            await store.close()

    run_sync(suspend())
    assert grant_id in run(config, "audit", "suspensions").output
    assert run(config, "audit", "resume", grant_id).exit_code == 0
    assert "no suspended grants" in run(config, "audit", "suspensions").output
    again = run(config, "audit", "resume", grant_id)
    assert again.exit_code != 0 and "not suspended" in again.output
    assert run(config, "audit", "verify").exit_code == 0


def test_a_bad_time_is_a_one_line_error(config: Path) -> None:
    result = run(config, "audit", "--since", "last tuesday")
    assert result.exit_code == 2 and "ISO 8601" in result.output


def test_verify_against_an_anchor_catches_a_trail_cut_back(config: Path) -> None:
    seed(config)
    with sqlite3.connect(database(config)) as db:
        seq, digest = db.execute("SELECT seq, hash FROM audit_chain").fetchone()
        # Cut back consistently: the chain alone still verifies.
        db.execute("DELETE FROM audit_events WHERE seq > 4")
        db.execute("UPDATE audit_chain SET seq = 4, hash = (SELECT hash FROM audit_events WHERE seq = 4)")
    assert run(config, "audit", "verify").exit_code == 0
    result = run(config, "audit", "verify", "--anchor", f"{seq}:{digest}")
    assert result.exit_code == 1
    assert f"BROKEN at event {seq}" in result.output and "cut back" in result.output


def test_a_malformed_anchor_is_a_usage_error(config: Path) -> None:
    seed(config)
    result = run(config, "audit", "verify", "--anchor", "12:not-a-hash")
    assert result.exit_code == 2
    assert "SEQ:HASH" in result.output
