"""Log set-up: secret-named fields are always redacted, and lines are stamped in UTC like structlog does."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from proxy.audit.log import AuditLog
from proxy.observe import logging as gglog
from proxy.observe.events import RequestEvent
from proxy.observe.logging import (
    REDACTED,
    CoalescedOutput,
    add_utc_timestamp,
    configure_logging,
    redact_secrets,
)


def test_secret_named_fields_are_redacted_every_time() -> None:
    line: dict[str, Any] = {"event": "x", "principal": "alice", "aws_secret_access_key": "s", "Token": "t"}
    for _ in range(3):  # the harmless names are remembered; the secret ones are checked again
        out = redact_secrets(None, "info", dict(line))
        assert out == {
            "event": "x",
            "principal": "alice",
            "aws_secret_access_key": REDACTED,
            "Token": REDACTED,
        }


def test_a_secret_field_among_known_harmless_ones_is_redacted() -> None:
    redact_secrets(None, "info", {"event": "x", "bucket": "b", "key": "k"})
    out = redact_secrets(None, "info", {"event": "x", "bucket": "b", "key": "k", "authorization": "AWS4..."})
    assert out["authorization"] == REDACTED and out["bucket"] == "b"


def test_harmless_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gglog, "_HARMLESS_NAMES", set())
    monkeypatch.setattr(gglog, "_HARMLESS_NAMES_LIMIT", 10)
    for i in range(50):
        redact_secrets(None, "info", {f"field_{i}": 1})
    assert len(gglog._HARMLESS_NAMES) == 10
    assert redact_secrets(None, "info", {"field_40": 1, "password": "p"}) == {
        "field_40": 1,
        "password": REDACTED,
    }


_STRUCTLOG_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


def test_timestamp_is_structlogs_iso_utc_text(monkeypatch: pytest.MonkeyPatch) -> None:
    for nanos in (1_764_000_000_123_456_789, 1_764_000_000_000_000_999, 1_764_000_001_999_999_000):
        monkeypatch.setattr(time, "time_ns", lambda nanos=nanos: nanos)
        stamped = add_utc_timestamp(None, "info", {})["timestamp"]
        moment = datetime.fromtimestamp(nanos // 1000 / 1e6, UTC)
        # What structlog.processors.TimeStamper(fmt="iso", utc=True) writes for that instant.
        assert stamped == moment.isoformat().replace("+00:00", "Z")
        assert _STRUCTLOG_ISO_UTC.fullmatch(stamped)


def test_timestamp_is_now() -> None:
    before = datetime.now(UTC)
    stamped = add_utc_timestamp(None, "info", {"timestamp": "old"})["timestamp"]
    after = datetime.now(UTC)
    assert before <= datetime.fromisoformat(stamped.replace("Z", "+00:00")) <= after


def test_audit_line_is_one_json_object_with_every_request_field(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    configure_logging("info", "json")
    try:
        event = RequestEvent("r1", 1.0, "10.0.0.1", "ua", "GET", principal="alice", groups=("ml",))
        AuditLog()(event)
    finally:
        structlog.reset_defaults()
    line = json.loads(capsysbinary.readouterr().out)
    assert line["event"] == "s3_request" and line["level"] == "info"
    assert _STRUCTLOG_ISO_UTC.fullmatch(line["timestamp"])
    assert {k: line[k] for k in event.as_dict()} == {**event.as_dict(), "groups": ["ml"], "grant_ids": []}


def test_audit_lines_of_a_batch_are_the_lines_logged_one_by_one(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    configure_logging("info", "json")
    events = [
        RequestEvent("r1", 1.0, "10.0.0.1", "ua", "GET", principal="alice", groups=("ml",), grant_ids=("g",)),
        RequestEvent("r2", 2.0, "10.0.0.2", "ua\u00e9", "PUT", key="k\u00ff", bytes_in=5),
    ]
    try:
        audit = AuditLog()
        for event in events:
            audit(event)
        audit.observe_batch(events)
    finally:
        structlog.reset_defaults()
    lines = capsysbinary.readouterr().out.splitlines()
    assert len(lines) == 4
    one_by_one, batched = [json.loads(line) for line in lines[:2]], [json.loads(line) for line in lines[2:]]
    for line in one_by_one + batched:
        line.pop("timestamp")
    assert [list(line.items()) for line in batched] == [list(line.items()) for line in one_by_one]


class _Recorder(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


async def test_lines_of_one_loop_turn_leave_in_one_write_and_by_the_next_turn() -> None:
    out = _Recorder()
    stream = CoalescedOutput(out)
    for n in range(50):
        stream.write(b"line %d\n" % n)
        stream.flush()
    assert out.writes == 0  # still this turn
    await asyncio.sleep(0)
    assert out.writes == 1
    assert out.getvalue() == b"".join(b"line %d\n" % n for n in range(50))


def test_without_a_running_loop_each_line_is_written_at_once() -> None:
    out = _Recorder()
    stream = CoalescedOutput(out)
    stream.write(b"cli line\n")
    stream.flush()
    assert out.getvalue() == b"cli line\n"


def test_a_line_pending_on_a_loop_that_stopped_still_leaves() -> None:
    out = _Recorder()
    stream = CoalescedOutput(out)

    loop = asyncio.new_event_loop()

    def log_and_stop() -> None:
        stream.write(b"last words\n")
        stream.flush()
        loop.stop()  # this turn is the loop's last: the drain it scheduled never runs

    loop.call_soon(log_and_stop)
    loop.run_forever()
    loop.close()
    assert out.getvalue() == b""

    async def log_again() -> None:
        stream.write(b"next\n")
        stream.flush()
        await asyncio.sleep(0)

    asyncio.run(log_again())  # a new loop is not blocked by the dead one's schedule
    assert out.getvalue() == b"last words\nnext\n"
    stream.write(b"at exit\n")
    stream.drain()  # what atexit calls
    assert out.getvalue().endswith(b"at exit\n")
