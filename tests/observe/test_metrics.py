"""Metrics counted from events, with bounded labels and one registry per gateway."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from proxy.access.events import GrantRevoked
from proxy.access.grants import Action, Grant
from proxy.audit.resources import ResourceCatalog
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.observe.metrics import GatewayMetrics, status_class

CATALOG = ResourceCatalog.from_patterns({"models": ["s3://archive/models/"]})


def event(**fields: Any) -> RequestEvent:
    base: dict[str, Any] = {
        "request_id": "R",
        "started_at": 0.0,
        "source_ip": "127.0.0.1",
        "user_agent": "t",
        "method": "GET",
        "principal": "alice",
        "operation": "GetObject",
        "action": "read",
        "bucket": "archive",
        "key": "models/w.bin",
        "decision": "allow",
        "grant_ids": ("g_1",),
        "status": 200,
        "bytes_out": 100,
        "duration_ms": 120.0,
        "ttfb_ms": 15.0,
    }
    return RequestEvent(**{**base, **fields})


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_requests_are_counted_by_operation_action_decision_and_status_class() -> None:
    metrics = GatewayMetrics(CATALOG)
    metrics(event())
    metrics(event())
    metrics(event(decision="deny", reason="AccessDenied", status=403, grant_ids=(), bytes_out=0))
    labels = {"operation": "GetObject", "action": "read"}
    assert value(metrics, "grantgate_s3_requests_total", **labels, decision="allow", status_class="2xx") == 2
    assert value(metrics, "grantgate_s3_requests_total", **labels, decision="deny", status_class="4xx") == 1
    assert value(metrics, "grantgate_s3_denials_total", reason="AccessDenied") == 1
    metrics(event(decision="deny", reason="AccessDenied", deny_reason="no_grant", status=403, grant_ids=()))
    assert value(metrics, "grantgate_s3_denials_total", reason="no_grant") == 1


def test_bytes_are_labelled_by_named_resource_then_granted_bucket_then_other() -> None:
    metrics = GatewayMetrics(CATALOG)
    metrics(event(bytes_out=100))
    metrics(event(key="datasets/a", bytes_out=7))
    metrics(event(bucket="random-bucket-xyz", decision="deny", grant_ids=(), bytes_out=3))
    metrics(event(method="PUT", action="write", operation="PutObject", bytes_in=50, bytes_out=0))
    assert value(metrics, "grantgate_s3_sent_bytes_total", resource="models") == 100
    assert value(metrics, "grantgate_s3_sent_bytes_total", resource="archive") == 7
    assert value(metrics, "grantgate_s3_sent_bytes_total", resource="other") == 3
    assert value(metrics, "grantgate_s3_received_bytes_total", resource="models") == 50
    exposition = metrics.exposition().decode()
    assert "random-bucket-xyz" not in exposition and "alice" not in exposition and "w.bin" not in exposition


def test_durations_and_time_to_first_byte_land_in_histograms() -> None:
    metrics = GatewayMetrics(CATALOG)
    metrics(event(duration_ms=120.0, ttfb_ms=15.0))
    metrics(event(duration_ms=3000.0, ttfb_ms=None))
    assert value(metrics, "grantgate_s3_request_duration_seconds_count", action="read") == 2
    assert value(metrics, "grantgate_s3_request_duration_seconds_bucket", action="read", le="0.25") == 1
    assert value(metrics, "grantgate_s3_time_to_first_byte_seconds_count", action="read") == 1
    assert value(metrics, "grantgate_s3_time_to_first_byte_seconds_sum", action="read") == 0.015


def test_upstream_failures_are_told_apart() -> None:
    metrics = GatewayMetrics(CATALOG)
    metrics(event(outcome="upstream_error", decision="error", status=503, grant_ids=()))
    metrics(event(outcome="upstream_status", upstream_status=500, status=500))
    metrics(event(upstream_status=404, status=404))
    assert value(metrics, "grantgate_upstream_errors_total", kind="unreachable") == 1
    assert value(metrics, "grantgate_upstream_errors_total", kind="status_5xx") == 1


def test_principals_are_labels_only_when_configured() -> None:
    quiet = GatewayMetrics(CATALOG)
    quiet(event(bytes_out=10))
    assert "grantgate_principal_sent_bytes_total" not in quiet.exposition().decode()
    loud = GatewayMetrics(CATALOG, per_principal=True)
    loud(event(bytes_out=10))
    assert value(loud, "grantgate_principal_sent_bytes_total", principal="alice") == 10


def test_alerts_and_workflow_events_are_counted_by_kind() -> None:
    metrics = GatewayMetrics(CATALOG)
    assert value(metrics, "grantgate_anomaly_alerts_total", kind="exfiltration") == 0
    metrics(AnomalyAlert("exfiltration", "critical", "m", 0.0))
    now = datetime.now(UTC)
    metrics(GrantRevoked(now, "carol", "", Grant("g", "bob", "b", "", frozenset({Action.READ}), now)))
    assert value(metrics, "grantgate_anomaly_alerts_total", kind="exfiltration") == 1
    assert value(metrics, "grantgate_workflow_events_total", kind="grant_revoked") == 1


def test_live_values_are_read_at_scrape_time() -> None:
    figures = {"observer_failures": 0.0, "grants": 3.0, "state_version": 9.0}
    metrics = GatewayMetrics(CATALOG, live=lambda: figures)
    assert value(metrics, "grantgate_grants_active") == 3
    figures.update(grants=5.0, observer_failures=2.0)
    assert value(metrics, "grantgate_grants_active") == 5
    assert value(metrics, "grantgate_observer_failures_total") == 2


def test_two_gateways_in_one_process_do_not_share_counters() -> None:
    first, second = GatewayMetrics(CATALOG), GatewayMetrics(CATALOG)
    first(event())
    assert value(second, "grantgate_s3_sent_bytes_total", resource="models") == 0


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 206, 304, 403, 503, 0)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "none",
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, "none"),
        (99, "none"),
        (100, "1xx"),
        (204, "2xx"),
        (304, "3xx"),
        (404, "4xx"),
        (599, "5xx"),
        (600, "none"),
    ],
)
def test_status_class(status: int, expected: str) -> None:
    assert status_class(status) == expected


def test_kept_label_children_are_the_registry_series() -> None:
    # The per-request series are looked up once per label set; later events still land on them.
    metrics = GatewayMetrics(CATALOG)
    for _ in range(3):
        metrics(event(bytes_out=10, bytes_in=4, decision="deny", reason="AccessDenied", status=403))
    metrics(event(bytes_out=5, status=500))
    labels = {"operation": "GetObject", "action": "read"}
    assert value(metrics, "grantgate_s3_requests_total", **labels, decision="deny", status_class="4xx") == 3
    assert value(metrics, "grantgate_s3_requests_total", **labels, decision="allow", status_class="5xx") == 1
    assert value(metrics, "grantgate_s3_sent_bytes_total", resource="models") == 35
    assert value(metrics, "grantgate_s3_received_bytes_total", resource="models") == 12
    assert value(metrics, "grantgate_s3_denials_total", reason="AccessDenied") == 3
    assert value(metrics, "grantgate_s3_request_duration_seconds_count", action="read") == 4
    assert value(metrics, "grantgate_s3_time_to_first_byte_seconds_count", action="read") == 4
