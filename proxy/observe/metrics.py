"""Prometheus metrics: an observer of events, with one registry per gateway (never the global one).

With several workers the values live in shared files instead (proxy/observe/multiprocess.py) and
/metrics merges every worker's; gauges say how to merge them with their `multiprocess_mode`.

Labels are bounded: operation and action names, decisions, status classes, S3 error codes, anomaly and
workflow event kinds, and resources (named areas, granted buckets, else "other"). Never a key, an
address or a request id; principals only when `[metrics] per_principal` is on.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.audit.records import event_kind, subject_key
from proxy.audit.resources import ResourceCatalog
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.observe.multiprocess import merged_registry, shared_directory

ANOMALY_KINDS = (
    "exfiltration",
    "outside_network",
    "new_group_reader",
    "denial_burst",
    "break_glass",
    "outside_hours",
    "decoy_touched",
)
UPSTREAM_ERROR_KINDS = ("unreachable", "status_5xx")
# Request latency from a few ms (HEAD from memory) to many minutes (a large object streamed out).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
TTFB_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


_STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    return _STATUS_CLASSES[status // 100] if 100 <= status < 600 else "none"


class _Children:
    """A labelled metric's children, kept: `labels()` validates, converts and locks on every call
    (~1 µs each, four times a request), while the label values are few and bounded (module docstring)."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class _Live(Collector):
    """Values read at scrape time from their owner: observer failures, grants in memory, state version."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        values = self._read()
        yield CounterMetricFamily(
            "grantgate_observer_failures",
            "Event observers that raised (the request they observed was not affected).",
            value=values.get("observer_failures", 0),
        )
        yield GaugeMetricFamily(
            "grantgate_grants_active",
            "Active grants in this gateway's memory.",
            value=values.get("grants", 0),
        )
        yield GaugeMetricFamily(
            "grantgate_state_version",
            "Store version this gateway's grants and keys were loaded from.",
            value=values.get("state_version", 0),
        )


class GatewayMetrics:
    """Counts what the events say; call it with any event."""

    def __init__(
        self,
        catalog: ResourceCatalog,
        *,
        per_principal: bool = False,
        registry: CollectorRegistry | None = None,
        live: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.catalog = catalog
        self.per_principal = per_principal
        r = self.registry
        self.requests = Counter(
            "grantgate_s3_requests",
            "S3 requests, by operation, action, decision and HTTP status class.",
            ["operation", "action", "decision", "status_class"],
            registry=r,
        )
        self.bytes_received = Counter(
            "grantgate_s3_received_bytes",
            "Request body bytes received from clients.",
            ["resource"],
            registry=r,
        )
        self.bytes_sent = Counter(
            "grantgate_s3_sent_bytes", "Response body bytes sent to clients.", ["resource"], registry=r
        )
        self.duration = Histogram(
            "grantgate_s3_request_duration_seconds",
            "Time from the request's arrival to its last byte.",
            ["action"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "grantgate_s3_time_to_first_byte_seconds",
            "Time from the request's arrival to the first byte of the bucket's answer being sent.",
            ["action"],
            buckets=TTFB_BUCKETS,
            registry=r,
        )
        self.denials = Counter(
            "grantgate_s3_denials",
            "Refused S3 requests, by reason: no_grant, source_network..., else the S3 error code.",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "grantgate_upstream_errors",
            "Failures of the storage backend: unreachable, or answering 5xx.",
            ["kind"],
            registry=r,
        )
        self.alerts = Counter(
            "grantgate_anomaly_alerts", "Anomaly alerts raised, by rule.", ["kind"], registry=r
        )
        self.workflow = Counter(
            "grantgate_workflow_events",
            "Access workflow events (requests, grants), by kind.",
            ["kind"],
            registry=r,
        )
        # Every worker counts the same store: the freshest reading of a live worker is the answer.
        self.pending = Gauge(
            "grantgate_access_requests_pending",
            "Access requests waiting for a decision.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.suspensions = Counter(
            "grantgate_grant_suspensions", "Grants suspended automatically by an anomaly rule.", registry=r
        )
        # Labelled by resource (bounded by the catalog), never by key: a decoy's key stays off dashboards.
        self.decoy_touches = Counter(
            "grantgate_decoy_touches", "Reads of decoy objects, by resource.", ["resource"], registry=r
        )
        self.feed_dropped = Counter(
            "grantgate_anomaly_feed_dropped",
            "Request events a worker could not pass to worker 0's anomaly rules (worker 0 unreachable).",
            registry=r,
        )
        self.audit_written = Counter(
            "grantgate_audit_events_written", "Audit records appended to the durable trail.", registry=r
        )
        self.audit_dropped = Counter(
            "grantgate_audit_events_dropped",
            "Events not written to the durable trail because its queue was full.",
            registry=r,
        )
        self.audit_failures = Counter(
            "grantgate_audit_write_failures",
            "Failed attempts to write a batch to the audit store.",
            registry=r,
        )
        # Each worker has a queue of its own: what waits is their sum (a dead worker's queue is lost).
        self.audit_queue = Gauge(
            "grantgate_audit_queue_depth",
            "Events waiting for the audit store.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.principal_sent: Counter | None = None
        self.principal_received: Counter | None = None
        if per_principal:
            self.principal_sent = Counter(
                "grantgate_principal_sent_bytes", "Bytes sent to each principal.", ["principal"], registry=r
            )
            self.principal_received = Counter(
                "grantgate_principal_received_bytes",
                "Bytes received from each principal.",
                ["principal"],
                registry=r,
            )
        for kind in ANOMALY_KINDS:
            self.alerts.labels(kind)
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(kind)
        self.live = _Live(live) if live is not None else None
        if self.live is not None:
            r.register(self.live)
        # The per-request series, by label values (see _Children).
        self._requests = _Children(self.requests)
        self._received = _Children(self.bytes_received)
        self._sent = _Children(self.bytes_sent)
        self._duration = _Children(self.duration)
        self._ttfb = _Children(self.ttfb)
        self._denials = _Children(self.denials)

    def __call__(self, event: Any) -> None:
        self.observe_batch([event])

    def observe_batch(self, events: list[Any]) -> None:
        """Count a batch of events: each counter series is incremented once per batch, by its total."""
        tally: dict[tuple[Any, tuple[str, ...]], float] = defaultdict(float)
        for event in events:
            if isinstance(event, RequestEvent):
                self._request(event, tally)
            elif isinstance(event, AnomalyAlert):
                self.alerts.labels(event.kind).inc()
            else:
                self.workflow.labels(event_kind(event)).inc()
        for (children, labels), amount in tally.items():
            children(*labels).inc(amount)

    def _request(self, event: RequestEvent, tally: dict[tuple[Any, tuple[str, ...]], float]) -> None:
        action = event.action or "none"
        tally[
            self._requests, (event.operation or "none", action, event.decision, status_class(event.status))
        ] += 1
        if event.bytes_in or event.bytes_out:
            granted = bool(event.grant_ids)
            resource = self.catalog.label_for(event.bucket, subject_key(event), granted=granted)
            if event.bytes_in:
                tally[self._received, (resource,)] += event.bytes_in
            if event.bytes_out:
                tally[self._sent, (resource,)] += event.bytes_out
        self._duration(action).observe(event.duration_ms / 1000)
        if event.ttfb_ms is not None:
            self._ttfb(action).observe(event.ttfb_ms / 1000)
        if event.decision == "deny":
            tally[self._denials, (event.deny_reason or event.reason or "unknown",)] += 1
        if event.outcome == "upstream_error" and event.upstream_status is None:
            self.upstream_errors.labels("unreachable").inc()
        elif event.upstream_status is not None and event.upstream_status >= 500:
            self.upstream_errors.labels("status_5xx").inc()
        if event.decoy is not None:
            self.decoy_touches.labels(
                self.catalog.label_for(event.bucket, subject_key(event), granted=True)
            ).inc()
        if self.per_principal and event.principal and self.principal_sent and self.principal_received:
            if event.bytes_out:
                self.principal_sent.labels(event.principal).inc(event.bytes_out)
            if event.bytes_in:
                self.principal_received.labels(event.principal).inc(event.bytes_in)

    def exposition(self) -> bytes:
        """Every worker's counts when they share a directory (with this process's live values), else
        this registry's."""
        directory = shared_directory()
        if directory is None:
            return generate_latest(self.registry)
        live = [self.live] if self.live is not None else []
        return generate_latest(merged_registry(directory, *live))


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer token; constant time in the token."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def metrics_handler(metrics: GatewayMetrics, token: str = "") -> Callable[[web.Request], Any]:
    """/metrics; with `token`, only for requests that carry it (the series tell who moved how much)."""

    async def serve_metrics(request: web.Request) -> web.Response:
        if token and not bearer_matches(request.headers.get("Authorization"), token):
            return web.Response(
                status=401,
                text="a bearer token is required for /metrics\n",
                headers={"WWW-Authenticate": 'Bearer realm="grantgate-metrics"'},
            )
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return serve_metrics
