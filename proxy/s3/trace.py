"""What each step of one S3 request returned, and the one event built from it when the request ends.

The steps fill in a `Trace` (one assignment per step, bytes counted as they move); `event_of` turns it
into the request's `RequestEvent` once, in the pipeline's `finally`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.access.decide import ABSENT, Allow, Decision, Deny
from proxy.access.grants import Scope
from proxy.audit.text import clean_text
from proxy.errors import S3Error
from proxy.identity.principals import Caller
from proxy.observe.events import Outcome, RequestEvent, Verdict
from proxy.s3.operations import Operation
from proxy.s3.watch import TransferWatch

# Statuses of a refusal (the request was judged and refused), not a failure of the gateway.
_DENYING_STATUSES = frozenset({400, 401, 403, 404, 405, 411, 501})


class Meter:
    """Bytes moved each way, re-checking the grant as they go: every body loop, spliced or not, calls
    `inbound` or `outbound` once per piece."""

    __slots__ = ("bytes_in", "bytes_out", "watch")

    def __init__(self, watch: TransferWatch | None = None) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        self.watch = watch

    def inbound(self, count: int) -> None:
        self.bytes_in += count
        if self.watch is not None:
            self.watch.check()

    def outbound(self, count: int) -> None:
        self.bytes_out += count
        if self.watch is not None:
            self.watch.check()


@dataclass(slots=True)
class Trace:
    """One request so far. Each field is set once, by the step that produced it."""

    request_id: str
    started_at: float  # unix time
    started: float  # perf_counter, for durations
    source_ip: str
    user_agent: str
    method: str
    access_key_id: str | None = None  # authenticate: as sent, before it is verified
    caller: Caller | None = None  # authenticate: proven
    operation: Operation | None = None  # classify
    decision: Decision | None = None  # authorize
    decoy: str | None = None  # classify: the decoy this request reads, if any
    keys_touched: int = 0  # DeleteObjects: keys in its body
    meter: Meter = field(default_factory=Meter)  # forward
    upstream_status: int | None = None  # forward: the bucket answered
    gateway_status: int | None = None  # the gateway answered itself, allowed (ListBuckets)
    ttfb_ms: float | None = None
    error: S3Error | None = None  # the S3 error the client was answered with
    ending: Outcome | None = None  # cut off: revoked, upstream_error, client_disconnected, internal_error
    identity: ObjectIdentity | None = None  # forward: the object read or written, as the bucket named it

    def since_start_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def end(self, outcome: Outcome) -> None:
        """How the request was cut off; the first reason given stands (a cut ends in a disconnect)."""
        if self.ending is None:
            self.ending = outcome


def event_of(trace: Trace, duration_ms: float) -> RequestEvent:
    """The request's one outcome event (pure)."""
    caller, op, decision, err = trace.caller, trace.operation, trace.decision, trace.error
    answered = trace.upstream_status is not None or trace.gateway_status is not None
    return RequestEvent(
        request_id=trace.request_id,
        started_at=trace.started_at,
        source_ip=trace.source_ip,
        user_agent=trace.user_agent,
        method=trace.method,
        principal=caller.principal.name if caller else None,
        groups=tuple(sorted(caller.principal.groups)) if caller else (),
        access_key_id=clean_text(trace.access_key_id) if trace.access_key_id is not None else None,
        operation=op.name if op else None,
        action=op.action.value if op and op.action else None,
        bucket=op.bucket if op else None,
        key=op.key if op else None,
        decision=verdict(answered, err),
        reason=err.code if err else None,
        grant_ids=decision.grant_ids if isinstance(decision, Allow) else (),
        status=err.status if err else trace.upstream_status or trace.gateway_status or 0,
        bytes_in=trace.meter.bytes_in,
        bytes_out=trace.meter.bytes_out,
        duration_ms=duration_ms,
        ttfb_ms=trace.ttfb_ms,
        outcome=outcome(trace.ending, trace.upstream_status, err),
        upstream_status=trace.upstream_status,
        keys_touched=trace.keys_touched,
        prefix=next((t.key for t in op.targets if t.scope is Scope.PREFIX and t.bucket), None)
        if op
        else None,
        deny_reason=decision.reason if isinstance(decision, Deny) and decision.reason != ABSENT else None,
        **receipt_fields(trace),
        decoy=trace.decoy,
    )


@dataclass(frozen=True, slots=True)
class ObjectIdentity:
    version_id: str | None
    etag: str | None
    size: int | None
    checksum: str | None
    expected: int | None  # body bytes the answer promised (reads); None for writes
    first_byte: int | None = None  # reads: where in the object the body starts (Content-Range)


# The operations whose answers name one object read or written whole (or by range).
RECEIPT_OPERATIONS = frozenset({"GetObject", "PutObject", "CopyObject", "CompleteMultipartUpload"})


def identity_of(op: Operation | None, status: int, headers: Mapping[str, str]) -> ObjectIdentity | None:
    """The object a successful read or write moved, from the bucket's answer (pure)."""
    if op is None or op.name not in RECEIPT_OPERATIONS or not 200 <= status < 300:
        return None
    length = headers.get("Content-Length")
    expected = int(length) if op.name == "GetObject" and length and length.isdigit() else None
    size = expected
    total = headers.get("Content-Range", "").rpartition("/")[2]
    if total.isdigit():
        size = int(total)
    checksum = next(
        (
            f"{name[15:].lower()}:{value}"
            for name, value in headers.items()
            if name.lower().startswith("x-amz-checksum-") and name.lower() != "x-amz-checksum-type"
        ),
        None,
    )
    etag = headers.get("ETag")
    return ObjectIdentity(
        headers.get("x-amz-version-id"),
        etag.strip('"') if etag else None,
        size,
        checksum,
        expected,
        first_byte(headers.get("Content-Range")) if op.name == "GetObject" else None,
    )


def first_byte(content_range: str | None) -> int | None:
    """Where a read's body starts: "bytes 100-199/1000" -> 100; no Content-Range: the whole object, 0."""
    if content_range is None:
        return 0
    unit, _, spec = content_range.strip().partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def receipt_fields(trace: Trace) -> dict[str, Any]:
    found = trace.identity
    if found is None:
        return {}
    if found.expected is not None:
        complete = trace.ending is None and trace.meter.bytes_out == found.expected
        size = found.size
    else:
        complete = trace.ending is None
        size = found.size if found.size is not None else trace.meter.bytes_in or None
    return {
        "version_id": found.version_id,
        "etag": found.etag,
        "object_size": size,
        "checksum": found.checksum,
        "complete": complete,
        "range_start": found.first_byte,
    }


def verdict(answered: bool, err: S3Error | None) -> Verdict:
    if answered:  # the bucket was reached (or the gateway answered itself): the gateway allowed it
        return Verdict.ALLOW
    if err is None or err.status in _DENYING_STATUSES:
        return Verdict.DENY
    return Verdict.ERROR


def outcome(ending: Outcome | None, upstream_status: int | None, err: S3Error | None) -> Outcome:
    if ending is not None and ending is not Outcome.CLIENT_DISCONNECTED:
        return ending
    if upstream_status is not None and upstream_status >= 400:
        return Outcome.UPSTREAM_STATUS
    if ending is not None:
        return ending
    if err is not None and err.status == 403:
        return Outcome.DENIED
    if err is not None and err.status < 500:
        return Outcome.CLIENT_ERROR
    return Outcome.OK
