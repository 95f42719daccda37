"""Events the core emits and observers consume: the seam for audit, metrics, anomalies and notifications.

The data plane and the workflow only ever emit; they never know which observers exist (mitmproxy's
addon idea). An observer that fails is logged and counted, never allowed to fail what it observes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

import structlog

log = structlog.get_logger("grantgate.events")


class Verdict(StrEnum):
    """A request event's `decision`: str-valued, so audit JSON and metric labels carry the plain word."""

    ALLOW = "allow"
    DENY = "deny"
    ERROR = "error"


class Outcome(StrEnum):
    """How a request ended (str-valued, like Verdict)."""

    OK = "ok"
    DENIED = "denied"
    CLIENT_ERROR = "client_error"
    UPSTREAM_STATUS = "upstream_status"  # the bucket answered 4xx/5xx
    UPSTREAM_ERROR = "upstream_error"  # the bucket could not be reached or fell short mid-body
    CLIENT_DISCONNECTED = "client_disconnected"
    REVOKED = "revoked"  # cut in flight: the grant or the access key was revoked
    BUDGET_SPENT = "budget_spent"  # cut in flight: the grant's byte budget ran out
    STATE_UNAVAILABLE = "state_unavailable"  # cut in flight: access state past its grace period
    INTERNAL_ERROR = "internal_error"
    ERROR = "error"  # STS: the gateway's own state was unavailable


@dataclass(slots=True)
class RequestEvent:
    """The one outcome record of one S3 request, whatever happened to it: built once, as it ends."""

    request_id: str
    started_at: float  # unix time
    source_ip: str
    user_agent: str
    method: str
    principal: str | None = None
    groups: tuple[str, ...] = ()
    access_key_id: str | None = None
    operation: str | None = None
    action: str | None = None
    bucket: str | None = None
    key: str | None = None
    decision: Verdict = Verdict.DENY
    reason: str | None = None  # why denied or failed: an S3 error code or a short token
    grant_ids: tuple[str, ...] = ()
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duration_ms: float = 0.0
    ttfb_ms: float | None = None
    outcome: Outcome = Outcome.OK
    upstream_status: int | None = None
    keys_touched: int = 0
    prefix: str | None = None  # the prefix a listing covers (its key is None)
    deny_reason: str | None = None  # why refused, machine-readable: no_grant, source_network...
    # The object as the bucket answered for it (a receipt): reads and writes of one object only.
    version_id: str | None = None
    etag: str | None = None
    object_size: int | None = None
    checksum: str | None = None  # "crc32c:..." when the bucket gave one
    complete: bool | None = None  # the whole object (or range asked for) moved
    decoy: str | None = None  # s3://bucket/key of the decoy this request read (proxy/access/decoys.py)
    # The first byte of the object a read served (0 for a whole object, from Content-Range for a range).
    range_start: int | None = None

    def as_dict(self) -> dict[str, Any]:
        # Every field is an immutable scalar or tuple of str, so a shallow copy equals asdict()'s deep
        # one at a tenth of the cost (this runs for every request, for the audit line and the store).
        return {name: getattr(self, name) for name in _REQUEST_EVENT_FIELDS}


_REQUEST_EVENT_FIELDS = tuple(f.name for f in fields(RequestEvent))


@dataclass(frozen=True, slots=True)
class AnomalyAlert:
    """Something in the traffic looks wrong (proxy/observe/anomalies.py): audited, counted, notified."""

    # exfiltration | outside_network | new_group_reader | denial_burst | break_glass | outside_hours |
    # decoy_touched | whole_model
    kind: str
    severity: str  # warning | critical
    message: str
    at: float  # unix time
    principal: str | None = None
    resource: str | None = None
    grant_id: str | None = None
    source_ip: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    response: str | None = None  # what was done about it automatically, e.g. "grant_suspended"
    # Chat posts one of its kind per principal per this many seconds (0: each); the audit trail, metrics
    # and webhooks still get every one. For alerts no detector's cooldown bounds: a person can repeat them.
    repeat_after: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ObserverFailure:
    observer: str
    error: str


Observer = Callable[[Any], None]


@dataclass
class EventBus:
    """Fan-out to observers. Observers must be quick; slow work belongs on their own queue.

    `emit` delivers at once. `emit_later`, for the data plane, only appends to a list: the observers get
    the events of one turn of the event loop together, after that turn's responses are written, and an
    observer with an `observe_batch(events)` method gets them as one list, to render them in one go.
    """

    observers: list[Observer] = field(default_factory=list)
    failures: int = 0
    _later: list[Any] = field(default_factory=list, repr=False)
    _flush_on: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def subscribe(self, observer: Observer) -> None:
        self.observers.append(observer)

    def emit(self, event: Any) -> None:
        for observer in self.observers:
            self._deliver(observer, event)

    def emit_later(self, event: Any) -> None:
        self._later.append(event)
        if self._flush_on is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a CLI command, a test): deliver now
                self.flush()
                return
            self._flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Deliver what `emit_later` queued (also called as the observers stop, so nothing is lost)."""
        self._flush_on = None
        batch, self._later = self._later, []
        if not batch:
            return
        for observer in self.observers:
            observe_batch = getattr(observer, "observe_batch", None)
            if observe_batch is None:
                for event in batch:
                    self._deliver(observer, event)
                continue
            try:
                observe_batch(batch)
            except Exception as exc:
                self._failed(observer, exc)

    def _deliver(self, observer: Observer, event: Any) -> None:
        try:
            observer(event)
        except Exception as exc:
            self._failed(observer, exc)

    def _failed(self, observer: Observer, exc: Exception) -> None:
        self.failures += 1
        name = getattr(observer, "__qualname__", type(observer).__name__)
        log.error("observer_failed", observer=name, error=repr(exc))
