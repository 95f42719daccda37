"""Audit records and the hash chain: what is stored for each event and how tampering is caught."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from proxy.access.events import ApprovalRecorded, BreakGlassUsed, GrantCreated, RequestCreated
from proxy.access.grants import Action, Grant
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.audit.records import (
    GENESIS,
    AuditRecord,
    ChainedRow,
    ChainVerifier,
    alert_record,
    chain,
    control_record,
    jsonable,
    link_hash,
    parse_moment,
    request_record,
    usage_from_records,
    usage_of,
    usage_record,
)
from proxy.audit.resources import ResourceCatalog
from proxy.observe.events import AnomalyAlert, RequestEvent

NOW = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)
CATALOG = ResourceCatalog.from_patterns({"models": ["s3://archive/models/"]})


def _request(**changes: object) -> RequestEvent:
    event = RequestEvent(
        request_id="R1",
        started_at=NOW.timestamp(),
        source_ip="10.1.2.3",
        user_agent="test",
        method="GET",
        principal="alice",
        groups=("ml",),
        access_key_id="GGKEY",
        operation="GetObject",
        action="read",
        bucket="archive",
        key="models/llama.gguf",
        decision="allow",
        grant_ids=("g_1",),
        status=200,
        bytes_out=1234,
    )
    for name, value in changes.items():
        setattr(event, name, value)
    return event


def _records(n: int) -> list[AuditRecord]:
    return [
        AuditRecord("s3_request", "data", NOW + timedelta(seconds=i), principal=f"p{i}", event={"i": i})
        for i in range(n)
    ]


def _verify(rows: list[ChainedRow], head: tuple[int, str] | None = None) -> ChainVerifier:
    verifier = ChainVerifier()
    for row in rows:
        if not verifier.feed(row):
            break
    last = head or ((rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS))
    verifier.finish(*last)
    return verifier


def test_request_record_names_the_resource_target_and_grant() -> None:
    record = request_record(_request(), CATALOG)
    assert (record.kind, record.plane, record.principal) == ("s3_request", "data", "alice")
    assert record.resource == "models"
    assert record.target == "s3://archive/models/llama.gguf"
    assert record.grant_id == "g_1"
    assert record.at == NOW
    body = json.loads(record.body())
    assert body["event"]["bytes_out"] == 1234 and body["decision"] == "allow"


def test_secret_named_fields_are_redacted_at_any_depth() -> None:
    data = jsonable(
        {
            "headers": {"Authorization": "AWS4-HMAC-SHA256 Signature=f00dfeed", "Host": "h"},
            "session_token": "Zm9vYmFy",
            "items": [{"secret_access_key": "s3cr3t"}],
            "access_key_id": "GGKEY",
        }
    )
    text = json.dumps(data)
    assert "f00dfeed" not in text and "Zm9vYmFy" not in text and "s3cr3t" not in text
    assert data["headers"]["Host"] == "h" and data["access_key_id"] == "GGKEY"


def test_workflow_events_are_read_generically() -> None:
    grant = Grant("g_9", "bob", "archive", "models/", frozenset({Action.READ}), NOW, NOW + timedelta(hours=2))
    record = control_record(GrantCreated(NOW, "carol", "approved", grant), NOW)
    assert (record.kind, record.plane) == ("grant_created", "control")
    assert record.principal == "bob"
    assert record.grant_id == "g_9"
    assert record.target == "s3://archive/models/"

    request = AccessRequest(
        "r_1", "bob", "models", "archive", "models/", frozenset({Action.READ}), timedelta(hours=2),
        "need it", RequestStatus.PENDING, NOW, NOW + timedelta(days=1),
    )  # fmt: skip
    created = control_record(RequestCreated(NOW, "bob", "", request), NOW)
    assert (created.kind, created.principal, created.resource) == ("request_created", "bob", "models")
    assert created.decision == "pending"
    glass = control_record(BreakGlassUsed(NOW, "bob", "prod down", request, grant), NOW)
    assert glass.kind == "break_glass_used" and glass.grant_id == "g_9"
    # An approval is the approver's act: the trail's principal is carol, not the requester bob.
    approval = control_record(ApprovalRecorded(NOW, "carol", "ok", request), NOW)
    assert (approval.kind, approval.principal) == ("approval_recorded", "carol")
    assert approval.event["requester"] == "bob"


def test_alert_record_is_kept_under_the_anomaly_family() -> None:
    alert = AnomalyAlert("exfiltration", "critical", "too much", NOW.timestamp(), "alice", grant_id="g_1")
    record = alert_record(alert)
    assert record.kind == "anomaly.exfiltration" and record.plane == "alert" and record.grant_id == "g_1"


def test_usage_counts_whole_object_reads_and_bytes_under_the_first_grant() -> None:
    usage = usage_of(_request(bytes_out=5000))
    assert usage is not None
    assert (usage.grant_id, usage.objects_read, usage.bytes_read, usage.requests) == ("g_1", 1, 5000, 1)
    head = usage_of(_request(method="HEAD", operation="HeadObject", bytes_out=0))
    assert head is not None and head.objects_read == 0
    put = usage_of(_request(method="PUT", operation="PutObject", action="write", bytes_in=77, bytes_out=0))
    assert put is not None and (put.objects_written, put.bytes_written, put.bytes_read) == (1, 77, 0)
    assert usage_of(_request(decision="deny", grant_ids=())) is None


def test_usage_adds_up_and_keeps_first_and_last_use() -> None:
    first = usage_of(_request(started_at=NOW.timestamp()))
    later = usage_of(_request(started_at=(NOW + timedelta(minutes=5)).timestamp(), bytes_out=10))
    assert first is not None and later is not None
    later.add(first)
    assert later.requests == 2 and later.bytes_read == 1244 and later.objects_read == 2
    assert later.first_used_at == NOW and later.last_used_at == NOW + timedelta(minutes=5)


def test_usage_from_stored_records_matches_the_writers_fold() -> None:
    events = [_request(bytes_out=100), _request(bytes_out=5, method="HEAD", operation="HeadObject")]
    stored = [json.loads(request_record(e, CATALOG).body()) for e in events]
    stored.append(json.loads(request_record(_request(decision="deny", grant_ids=()), CATALOG).body()))
    expected = usage_of(events[0])
    assert expected is not None
    expected.add(usage_of(events[1]))  # type: ignore[arg-type]
    assert usage_from_records(stored) == {"g_1": expected}


def test_usage_roll_ups_are_not_counted_twice_with_the_receipts_they_cover() -> None:
    # With data_plane = "usage" a whole-object read is chained as a receipt and counted in the roll-up.
    receipt = _request(bytes_out=100, complete=True)
    rolled = usage_of(receipt)
    assert rolled is not None
    stored = [
        json.loads(request_record(receipt, CATALOG).body()),
        json.loads(usage_record(rolled, NOW).body()),
    ]
    assert usage_from_records(stored) == {"g_1": rolled}


def test_an_intact_chain_verifies() -> None:
    rows = chain(_records(5), 0, GENESIS)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == GENESIS and rows[1].prev_hash == rows[0].hash
    verifier = _verify(rows)
    assert verifier.broken is None and verifier.checked == 5


def test_a_chain_continues_from_its_head() -> None:
    first = chain(_records(2), 0, GENESIS)
    second = chain(_records(2), first[-1].seq, first[-1].hash)
    assert _verify(first + second).broken is None


def test_an_edited_body_breaks_the_chain_at_that_event() -> None:
    rows = chain(_records(5), 0, GENESIS)
    rows[2] = replace(rows[2], body=rows[2].body.replace('"i":2', '"i":20'))
    broken = _verify(rows).broken
    assert broken is not None and broken.seq == 3 and "altered" in broken.problem


def test_an_edited_query_column_is_caught_even_with_the_body_intact() -> None:
    rows = chain(_records(3), 0, GENESIS)
    rows[1] = replace(rows[1], columns={**rows[1].columns, "principal": "someone-else"})
    broken = _verify(rows).broken
    assert broken is not None and broken.seq == 2 and "principal" in broken.problem


def test_a_deleted_event_is_pinpointed() -> None:
    rows = chain(_records(5), 0, GENESIS)
    del rows[1]
    broken = _verify(rows).broken
    assert broken is not None and broken.seq == 3 and "2 is missing" in broken.problem


def test_deleting_the_latest_events_is_caught_by_the_head() -> None:
    rows = chain(_records(5), 0, GENESIS)
    broken = _verify(rows[:3], head=(rows[-1].seq, rows[-1].hash)).broken
    assert broken is not None and broken.seq == 4 and "4..5 is missing" in broken.problem


def test_a_rehashed_forgery_still_fails_against_the_next_link() -> None:
    rows = chain(_records(3), 0, GENESIS)
    forged_body = rows[0].body.replace('"p0"', '"mallory"')
    forged = replace(
        rows[0],
        body=forged_body,
        hash=link_hash(GENESIS, 1, forged_body),
        columns={**rows[0].columns, "principal": "mallory"},
    )
    broken = _verify([forged, *rows[1:]]).broken
    assert broken is not None and broken.seq == 2 and "does not link" in broken.problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("2025-03-01T08:00:00Z", datetime(2025, 3, 1, 8, tzinfo=UTC)),
        ("2025-03-01T09:00:00+01:00", datetime(2025, 3, 1, 8, tzinfo=UTC)),
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
    ],
)
def test_query_times_are_iso_or_durations_back_from_now(text: str, expected: datetime) -> None:
    assert parse_moment(text, NOW) == expected


def test_a_bad_query_time_says_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_moment("yesterday", NOW)
