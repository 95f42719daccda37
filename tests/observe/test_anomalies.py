"""Anomaly rules, fed events and the time: when each one alerts, and when it stays quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proxy.access.events import BreakGlassUsed, GrantCreated
from proxy.access.grants import Action, Grant
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.audit.resources import ResourceCatalog
from proxy.observe.anomalies import (
    SUSPEND,
    SUSPEND_PRINCIPAL,
    Detectors,
    OutsideHours,
    with_justifications,
)
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.observe.models import KnownModels, ModelCatalog, ShardRead, Tally, find_models
from proxy.observe.settings import AnomalySettings

T0 = datetime(2025, 3, 5, 10, 0, tzinfo=UTC).timestamp()  # a Wednesday, 10:00 UTC
CATALOG = ResourceCatalog.from_patterns(
    {"models": ["s3://archive/models/"], "training-data": ["s3://archive/training/"]}
)
MiB = 1024 * 1024


def settings(**rules: Any) -> AnomalySettings:
    """Every rule off unless given, so each test sees only the rule it is about."""
    off = {"enabled": False}
    base: dict[str, Any] = {
        "cooldown_seconds": 0,
        "exfiltration": off,
        "outside_network": off,
        "new_group_reader": off,
        "denial_burst": off,
        "break_glass": off,
        "outside_hours": off,
    }
    return AnomalySettings.model_validate({**base, **rules})


def read(
    principal: str = "alice", *, nbytes: int = MiB, key: str = "models/w.bin", **more: Any
) -> RequestEvent:
    event = RequestEvent(
        request_id="R",
        started_at=T0,
        source_ip=more.pop("source_ip", "10.0.0.5"),
        user_agent="t",
        method="GET",
        principal=principal,
        groups=more.pop("groups", ("ml",)),
        operation="GetObject",
        action="read",
        bucket="archive",
        key=key,
        decision="allow",
        grant_ids=("g_1",),
        status=200,
        bytes_out=nbytes,
    )
    for name, value in more.items():
        setattr(event, name, value)
    return event


def denied(principal: str | None = "mallory", source_ip: str = "203.0.113.9") -> RequestEvent:
    return RequestEvent(
        request_id="D",
        started_at=T0,
        source_ip=source_ip,
        user_agent="t",
        method="GET",
        principal=principal,
        bucket="archive",
        key="models/w.bin",
        decision="deny",
        reason="AccessDenied",
        status=403,
    )


# --- exfiltration ---


def test_exfiltration_alerts_once_when_a_principal_crosses_the_threshold_in_the_window() -> None:
    detectors = Detectors(settings(exfiltration={"window_seconds": 60, "threshold_bytes": 5 * MiB}), CATALOG)
    alerts = [a for i in range(8) for a in detectors.feed(read(nbytes=MiB), T0 + i)]
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.kind, alert.principal, alert.grant_id, alert.resource) == (
        "exfiltration",
        "alice",
        "g_1",
        "models",
    )
    assert alert.details["bytes"] == 6 * MiB and alert.severity == "critical"


def test_exfiltration_ignores_the_same_volume_spread_beyond_the_window() -> None:
    detectors = Detectors(settings(exfiltration={"window_seconds": 60, "threshold_bytes": 5 * MiB}), CATALOG)
    alerts = [a for i in range(20) for a in detectors.feed(read(nbytes=MiB), T0 + i * 20)]
    assert alerts == []


def test_exfiltration_counts_each_principal_separately() -> None:
    detectors = Detectors(settings(exfiltration={"window_seconds": 60, "threshold_bytes": 3 * MiB}), CATALOG)
    alerts = []
    for i in range(3):
        alerts += detectors.feed(read("alice", nbytes=MiB), T0 + i)
        alerts += detectors.feed(read("bob", nbytes=MiB), T0 + i)
    assert alerts == []
    assert [a.principal for a in detectors.feed(read("bob", nbytes=MiB), T0 + 4)] == ["bob"]


def test_the_suspend_response_is_carried_by_the_alert() -> None:
    rule = {"window_seconds": 60, "threshold_bytes": MiB, "response": "suspend"}
    detectors = Detectors(settings(exfiltration=rule), CATALOG)
    [alert] = detectors.feed(read(nbytes=2 * MiB), T0)
    assert alert.response == SUSPEND and alert.grant_id == "g_1"


# --- outside network ---


def test_a_grant_used_from_outside_the_resources_networks_alerts() -> None:
    detectors = Detectors(settings(outside_network={"networks": {"models": ["10.0.0.0/8"]}}), CATALOG)
    assert detectors.feed(read(source_ip="10.20.30.40"), T0) == []
    [alert] = detectors.feed(read(source_ip="198.51.100.7"), T0)
    assert (alert.kind, alert.source_ip, alert.resource) == ("outside_network", "198.51.100.7", "models")
    assert alert.details["allowed_networks"] == ["10.0.0.0/8"]


def test_networks_may_name_an_s3_prefix_and_other_areas_are_not_checked() -> None:
    detectors = Detectors(
        settings(outside_network={"networks": {"s3://archive/training/": ["192.168.0.0/16"]}}), CATALOG
    )
    assert detectors.feed(read(source_ip="8.8.8.8", key="models/w.bin"), T0) == []
    assert len(detectors.feed(read(source_ip="8.8.8.8", key="training/a.parquet"), T0)) == 1


def test_ipv4_mapped_ipv6_addresses_match_ipv4_networks() -> None:
    detectors = Detectors(settings(outside_network={"networks": {"models": ["127.0.0.0/8"]}}), CATALOG)
    assert detectors.feed(read(source_ip="::ffff:127.0.0.1"), T0) == []


def test_a_request_refused_for_its_source_network_alerts_too() -> None:
    detectors = Detectors(settings(outside_network={}), CATALOG, networks={"models": ["10.0.0.0/8"]})
    refused = denied("fay", "198.51.100.7")
    refused.deny_reason = "source_network"
    [alert] = detectors.feed(refused, T0)
    assert alert.kind == "outside_network" and alert.grant_id is None and alert.details["refused"] is True
    assert detectors.feed(denied("gil", "198.51.100.8"), T0) == []  # refused for another reason


def test_policy_networks_take_part_when_given() -> None:
    detectors = Detectors(settings(outside_network={}), CATALOG, networks={"models": ["10.0.0.0/8"]})
    assert len(detectors.feed(read(source_ip="1.2.3.4"), T0)) == 1


# --- new group reader ---


def test_a_reader_from_a_new_group_alerts_on_a_resource_others_already_read() -> None:
    detectors = Detectors(settings(new_group_reader={}), CATALOG, known_readers=[("models", "ml")])
    assert detectors.feed(read("ann", groups=("ml",)), T0) == []
    [alert] = detectors.feed(read("mark", groups=("marketing",)), T0)
    assert (alert.kind, alert.principal, alert.resource) == ("new_group_reader", "mark", "models")
    assert alert.details["known_groups"] == ["ml"]
    # Now the group is known: a colleague reading next is not news.
    assert detectors.feed(read("meg", groups=("marketing",)), T0 + 1) == []


def test_a_resource_nobody_read_yet_is_learned_quietly_and_remembered() -> None:
    detectors = Detectors(settings(new_group_reader={}), CATALOG)
    assert detectors.feed(read("ann", groups=("ml",), key="training/x"), T0) == []
    assert detectors.new_readers is not None
    learned = detectors.new_readers.take_learned()
    assert [(r, g, p) for r, g, p, _ in learned] == [("training-data", "ml", "ann")]
    assert detectors.new_readers.take_learned() == []


def test_a_principal_with_one_familiar_group_is_not_a_new_reader() -> None:
    detectors = Detectors(settings(new_group_reader={}), CATALOG, known_readers=[("models", "ml")])
    assert detectors.feed(read("kim", groups=("ml", "marketing")), T0) == []


# --- denial burst ---


def test_a_burst_of_denials_alerts_at_the_threshold() -> None:
    detectors = Detectors(settings(denial_burst={"window_seconds": 10, "threshold": 5}), CATALOG)
    alerts = [a for i in range(12) for a in detectors.feed(denied(), T0 + i * 0.5)]
    assert len(alerts) == 1
    assert alerts[0].kind == "denial_burst" and alerts[0].principal == "mallory"


def test_unauthenticated_denials_are_counted_per_address() -> None:
    detectors = Detectors(settings(denial_burst={"window_seconds": 10, "threshold": 3}), CATALOG)
    alerts = [a for i in range(3) for a in detectors.feed(denied(None, "203.0.113.50"), T0 + i)]
    assert len(alerts) == 1 and alerts[0].source_ip == "203.0.113.50" and alerts[0].principal is None


def test_slow_denials_never_make_a_burst() -> None:
    detectors = Detectors(settings(denial_burst={"window_seconds": 10, "threshold": 3}), CATALOG)
    assert [a for i in range(10) for a in detectors.feed(denied(), T0 + i * 6)] == []


# --- break glass ---


def _break_glass() -> BreakGlassUsed:
    now = datetime.fromtimestamp(T0, UTC)
    grant = Grant(
        "g_bg", "bob", "archive", "models/", frozenset({Action.READ}), now, now + timedelta(hours=1)
    )
    request = AccessRequest(
        "r_bg", "bob", "models", "archive", "models/", frozenset({Action.READ}), timedelta(hours=1),
        "prod is down", RequestStatus.APPROVED, now, now, break_glass=True, grant_id="g_bg",
    )  # fmt: skip
    return BreakGlassUsed(now, "bob", "prod is down", request, grant)


def test_break_glass_use_always_alerts() -> None:
    detectors = Detectors(settings(break_glass={}), CATALOG)
    [alert] = detectors.feed(_break_glass(), T0)
    assert (alert.kind, alert.severity, alert.principal, alert.grant_id) == (
        "break_glass",
        "critical",
        "bob",
        "g_bg",
    )


def test_other_workflow_events_are_not_break_glass() -> None:
    detectors = Detectors(settings(break_glass={}), CATALOG)
    event = _break_glass()
    assert detectors.feed(GrantCreated(event.at, "carol", "", event.grant), T0) == []


# --- outside hours ---


def test_requests_outside_working_hours_alert() -> None:
    rule = {"enabled": True, "start": "08:00", "end": "18:00", "timezone": "Europe/Paris"}
    detectors = Detectors(settings(outside_hours=rule), CATALOG)
    assert detectors.feed(read(), T0) == []  # 11:00 in Paris
    night = datetime(2025, 3, 5, 22, 30, tzinfo=UTC).timestamp()
    [alert] = detectors.feed(read(), night)
    assert alert.kind == "outside_hours" and alert.principal == "alice"


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (datetime(2025, 3, 5, 23, 0, tzinfo=UTC), True),  # Wednesday night shift
        (datetime(2025, 3, 6, 5, 0, tzinfo=UTC), True),  # early Thursday: Wednesday's shift
        (datetime(2025, 3, 6, 12, 0, tzinfo=UTC), False),
        (datetime(2025, 3, 9, 5, 0, tzinfo=UTC), False),  # early Sunday: Saturday has no shift
    ],
)
def test_overnight_hours_belong_to_the_day_the_shift_started(moment: datetime, inside: bool) -> None:
    hours = OutsideHours("22:00", "06:00", ["mon", "tue", "wed", "thu", "fri"], "UTC", CATALOG)
    assert hours.within(moment) is inside


# --- cooldown ---


def test_the_cooldown_holds_back_repeats_about_the_same_subject() -> None:
    detectors = Detectors(
        settings(cooldown_seconds=300, denial_burst={"window_seconds": 1, "threshold": 1}), CATALOG
    )
    assert len(detectors.feed(denied(), T0)) == 1
    assert detectors.feed(denied(), T0 + 10) == []
    assert len(detectors.feed(denied("eve"), T0 + 10)) == 1
    assert len(detectors.feed(denied(), T0 + 301)) == 1


def test_nothing_alerts_when_anomaly_detection_is_off() -> None:
    detectors = Detectors(
        AnomalySettings.model_validate({"enabled": False, "denial_burst": {"threshold": 1}}), CATALOG
    )
    assert detectors.feed(denied(), T0) == []


# --- decoys ---


def test_a_decoy_read_alerts_critically_and_suspends_every_grant_of_the_principal() -> None:
    detectors = Detectors(settings(), CATALOG)
    [alert] = detectors.feed(read("bob", decoy="s3://archive/models/bait.safetensors"), T0)
    assert alert.kind == "decoy_touched" and alert.severity == "critical"
    assert alert.principal == "bob" and alert.response == SUSPEND_PRINCIPAL
    assert alert.details["decoy"] == "s3://archive/models/bait.safetensors"
    assert "s3://archive/models/bait.safetensors" in alert.message and "bob" in alert.message


def test_a_refused_decoy_read_alerts_too_and_ordinary_reads_never_do() -> None:
    detectors = Detectors(settings(), CATALOG)
    assert detectors.feed(read("bob"), T0) == []
    refused = denied("bob")
    refused.decoy = "s3://archive/models/bait.safetensors"
    [alert] = detectors.feed(refused, T0)
    assert alert.details["allowed"] is False and alert.grant_id is None


def test_a_decoy_alert_may_be_set_to_alert_only() -> None:
    detectors = Detectors(settings(decoy_touched={"response": "alert"}), CATALOG)
    [alert] = detectors.feed(read("bob", decoy="s3://archive/models/bait.safetensors"), T0)
    assert alert.response is None


# --- whole-model pulls ---

SHARDS = [f"models/llama/model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
SHARD = 1000  # bytes per shard: a 4000-byte model


def known_models() -> KnownModels:
    listing = [(k, SHARD) for k in SHARDS] + [("models/llama/config.json", 500), ("models/small/s.gguf", 100)]
    return KnownModels(ModelCatalog.of(find_models("archive", listing)))


def model_rules(**rule: Any) -> Detectors:
    return Detectors(settings(whole_model=rule), CATALOG, models=known_models())


def ranged(principal: str, key: str, start: int, length: int, grant: str = "g_1") -> RequestEvent:
    return read(principal, key=key, nbytes=length, range_start=start, grant_ids=(grant,))


def judged(detectors: Detectors, events: list[RequestEvent], now: float = T0) -> list[AnomalyAlert]:
    """Feed `events` (no alert comes of a read itself), take the ranges as a flush does and judge each
    reader on them, as if they were every replica's rows of the window."""
    rule = detectors.whole_model
    assert rule is not None
    for event in events:
        assert detectors.feed(event, now) == []
    reads = rule.take()
    found = []
    for principal in sorted({r.principal for r in reads}):
        tally = Tally(now)
        tally.add(r for r in reads if r.principal == principal)
        found += rule.judge(principal, tally, {r.model for r in reads if r.principal == principal}, now)
    return [detectors.responded(finding) for finding in found]


def test_reading_most_of_a_model_in_parallel_ranges_is_judged_a_pull_naming_model_share_and_grants() -> None:
    # Four readers, 250-byte ranges over every shard, each range asked twice (a retry), two grants.
    events = [
        ranged("alice", key, start, 250, grant=f"g_{start % 500}")
        for start in range(0, SHARD, 250)
        for key in SHARDS
        for _ in range(2)
    ]
    [alert] = judged(model_rules(), events)
    assert alert.kind == "whole_model" and alert.severity == "critical"
    assert alert.details["model"] == "s3://archive/models/llama/"
    assert alert.details["bytes"] == 4 * SHARD and alert.details["share"] == 1.0
    assert alert.details["grant_ids"] == ["g_0", "g_250"] and alert.grant_id == "g_0"
    assert alert.response is None


def test_rereading_the_same_bytes_never_adds_up_to_a_whole_model() -> None:
    # 50 x 40% of the bytes, the same 40%
    events = [ranged("alice", key, 0, SHARD - 200 * (i % 2)) for i in range(50) for key in SHARDS[:2]]
    detectors = model_rules()
    assert judged(detectors, events) == []
    rule = detectors.whole_model
    assert rule is not None and rule.take() == []  # what was flushed is not sent again


def test_the_ranges_taken_are_merged_per_shard() -> None:
    detectors = model_rules()
    rule = detectors.whole_model
    assert rule is not None
    for start in (0, 250, 100, 600):
        detectors.feed(ranged("alice", SHARDS[0], start, 250), T0)
    assert [(r.start, r.end) for r in rule.take()] == [(0, 500), (600, 850)]


def test_a_40_percent_read_stays_quiet_and_objects_outside_models_do_not_count() -> None:
    events = [
        ranged("alice", SHARDS[0], 0, SHARD),
        ranged("alice", SHARDS[1], 0, 600),
        ranged("alice", "models/llama/config.json", 0, 500),
        ranged("bob", SHARDS[2], 0, SHARD),  # someone else's share
    ]
    assert judged(model_rules(), events) == []


def test_reading_parts_of_n_models_is_judged_when_configured() -> None:
    events = [ranged("alice", SHARDS[0], 0, 10), ranged("alice", "models/small/s.gguf", 0, 10)]
    [alert] = judged(model_rules(models=2, share=1.0), events)
    assert alert.details["models"] == ["s3://archive/models/llama/", "s3://archive/models/small/"]


def test_a_whole_model_pull_may_suspend_the_grant() -> None:
    [alert] = judged(model_rules(response="suspend"), [ranged("alice", key, 0, SHARD) for key in SHARDS])
    assert alert.response == SUSPEND and alert.grant_id == "g_1"


def test_the_alert_names_the_justification_each_grant_was_granted_on() -> None:
    [alert] = judged(
        model_rules(), [ranged("alice", key, 0, SHARD, f"g_{i % 2 + 1}") for i, key in enumerate(SHARDS)]
    )
    named = with_justifications(alert, {"g_1": "eval run 12", "g_2": ""})
    assert named.details["grants"] == [
        {"id": "g_1", "justification": "eval run 12"},
        {"id": "g_2", "justification": ""},
    ]
    assert "g_1: eval run 12" in named.message and "g_2: (none given)" in named.message


def test_a_tally_counts_each_byte_once_however_often_its_rows_are_added() -> None:
    [model] = find_models("archive", [(k, SHARD) for k in SHARDS])
    reads = [
        ShardRead("alice", model.name, SHARDS[0], 0, 600, ("g_1",)),
        ShardRead("alice", model.name, SHARDS[0], 400, 1200, ("g_2",)),
    ]
    tally = Tally(T0)
    for _ in range(3):  # the overlapping slices a replica takes of the store's rows
        tally.add(reads)
    assert tally.bytes_read(model) == (SHARD, 1)  # clipped at the shard's size
    assert list(tally.grants[model.name]) == ["g_1", "g_2"]
