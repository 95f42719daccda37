"""Audit records and their hash chain (pure): what is stored for an event, and how integrity is proved.

Each stored record is a canonical JSON body; its hash covers the previous record's hash, its sequence
number and the body, so editing, removing or reordering any record breaks every link after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

import orjson

from proxy.access.durations import parse_duration
from proxy.audit.resources import ResourceCatalog
from proxy.audit.text import writable
from proxy.observe.events import AnomalyAlert, RequestEvent

T = TypeVar("T")

GENESIS = "0" * 64
REDACTED = "[redacted]"
# The same rule as the log redactor: no field that could carry a credential is ever stored.
_SECRET_FIELD = re.compile(
    r"secret|password|passwd|signature|authorization|token|credential|cookie|api_key", re.IGNORECASE
)
# Object operations that move a whole object, for the usage counters.
_OBJECT_READS = frozenset({"GetObject"})
_OBJECT_WRITES = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload"})
# The counters of a Usage (and of its stored row and roll-up record).
USAGE_COUNTERS = ("requests", "objects_read", "bytes_read", "objects_written", "bytes_written")
# The columns a record is queried by; each is also a top-level field of the hashed body.
COLUMNS = ("kind", "plane", "at", "principal", "resource", "target", "grant_id", "decision")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One event as the audit store keeps it, before it is given its place in the chain."""

    kind: str
    plane: str  # data | control | alert | usage
    at: datetime
    principal: str | None = None
    resource: str | None = None  # a named resource, when the event falls in one
    target: str | None = None  # s3://bucket/key the event is about
    grant_id: str | None = None
    decision: str | None = None
    event: dict[str, Any] = field(default_factory=dict)

    def body(self) -> str:
        return canonical_json(
            {
                "kind": self.kind,
                "plane": self.plane,
                "at": iso(self.at),
                "principal": self.principal,
                "resource": self.resource,
                "target": self.target,
                "grant_id": self.grant_id,
                "decision": self.decision,
                "event": self.event,
            }
        )


@dataclass(frozen=True, slots=True)
class ChainedRow:
    """A record as stored: its body, its place in the chain and the links on each side."""

    seq: int
    columns: dict[str, Any]
    body: str
    prev_hash: str
    hash: str


# --- JSON ---------------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def parse_moment(text: str, now: datetime) -> datetime:
    """A query bound: an ISO 8601 time (UTC if no zone is given), or a duration back from now ("24h")."""
    value = text.strip()
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use ISO 8601 (2025-01-31T08:00Z) or a duration (24h)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False) in a tenth of the time (1.2 against 12 µs for a request's record). Only new
    records are rendered: verification hashes the stored text, so older records verify as they are."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        # Lone surrogates, an integer beyond 64 bits: rendered anyway, or the record (and every retry
        # of its batch) would fail for good.
        return json.dumps(writable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    return _SECRET_FIELD.search(name) is not None


def jsonable(value: Any) -> Any:
    """Any event value as plain JSON data, with secret-named fields redacted at every depth."""
    if value is None or type(value) in (str, int, bool):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return jsonable_mapping(value)
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, float) and value != value:  # NaN has no JSON form
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --- events -> records ----------------------------------------------------------------------------------


def event_kind(event: Any) -> str:
    """An event's name: its `kind` attribute, else its class name in snake_case."""
    kind = getattr(event, "kind", None)
    if isinstance(kind, Enum):
        kind = kind.value
    if isinstance(kind, str) and kind:
        return kind
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


def subject_key(event: RequestEvent) -> str:
    """The key a request is about: the object's, or for a listing the prefix it lists."""
    return event.key if event.key is not None else (event.prefix or "")


def request_record(event: RequestEvent, catalog: ResourceCatalog) -> AuditRecord:
    key = subject_key(event)
    target = f"s3://{event.bucket}/{key}" if event.bucket else None
    return AuditRecord(
        kind="s3_request",
        plane="data",
        at=datetime.fromtimestamp(event.started_at, UTC),
        principal=event.principal,
        resource=catalog.name_for(event.bucket, key),
        target=target,
        grant_id=event.grant_ids[0] if event.grant_ids else None,
        decision=event.decision,
        # Only scalars and tuples of names, never a credential: no need to walk it (this runs per request).
        event=event.as_dict(),
    )


def alert_record(alert: AnomalyAlert) -> AuditRecord:
    return AuditRecord(
        kind=f"anomaly.{alert.kind}",
        plane="alert",
        at=datetime.fromtimestamp(alert.at, UTC),
        principal=alert.principal,
        resource=alert.resource,
        grant_id=alert.grant_id,
        decision=alert.response,
        event=jsonable(alert.as_dict()),
    )


def jsonable_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    """A mapping as a JSON object, keys as strings, secret-named fields redacted at every depth."""
    return {str(k): REDACTED if _secret_name(str(k)) else jsonable(v) for k, v in value.items()}


def control_record(event: Any, now: datetime) -> AuditRecord:
    """A workflow event (request created, grant revoked...): read generically, whatever its shape."""
    value = jsonable(event.as_dict() if hasattr(event, "as_dict") else event)
    data: dict[str, Any] = value if isinstance(value, dict) else {"value": value}
    at = _first(data, "at", "occurred_at", "created_at", "decided_at")
    grant = _nested(data, "grant")
    request = _nested(data, "request")
    resource = _first(data, "resource_name") or _first(request, "resource_name")
    target = _first(data, "resource") or _first(grant, "resource") or _first(request, "resource")
    return AuditRecord(
        kind=event_kind(event),
        plane="control",
        at=parse_iso(at) if isinstance(at, str) else now,
        principal=_first(data, "principal", "requester", "actor")
        or _first(grant, "principal")
        or _first(request, "requester"),
        resource=resource if isinstance(resource, str) else None,
        target=target if isinstance(target, str) and target.startswith("s3://") else None,
        grant_id=_first(data, "grant_id") or _first(grant, "id") or _first(request, "grant_id"),
        decision=_first(data, "decision", "status") or _first(request, "status"),
        event=data,
    )


def _nested(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _first(data: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return None


# --- usage roll-ups -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """What was done under one grant: requests, whole objects and bytes moved, first and last use."""

    grant_id: str
    principal: str | None
    requests: int = 0
    objects_read: int = 0
    bytes_read: int = 0
    objects_written: int = 0
    bytes_written: int = 0
    first_used_at: datetime | None = None
    last_used_at: datetime | None = None

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.objects_read += other.objects_read
        self.bytes_read += other.bytes_read
        self.objects_written += other.objects_written
        self.bytes_written += other.bytes_written
        self.first_used_at = _min(self.first_used_at, other.first_used_at)
        self.last_used_at = _max(self.last_used_at, other.last_used_at)

    def as_dict(self) -> dict[str, Any]:
        return jsonable_mapping(dataclasses.asdict(self))


def usage_of(event: RequestEvent) -> Usage | None:
    """The usage an allowed request adds to the grant that covered its main target; None otherwise.

    Bytes are what crossed the gateway: bytes sent to the client count as read, bytes received from
    it count as written. An object counts once per successful whole-object read or write.
    """
    if event.decision != "allow" or not event.grant_ids:
        return None
    at = datetime.fromtimestamp(event.started_at, UTC)
    ok = 200 <= event.status < 300
    action = event.action or ""
    usage = Usage(event.grant_ids[0], event.principal, requests=1, first_used_at=at, last_used_at=at)
    if action == "read":
        usage.bytes_read = event.bytes_out
        usage.objects_read = int(ok and event.method == "GET" and event.operation in _OBJECT_READS)
    elif action in ("write", "delete", "admin"):
        usage.bytes_written = event.bytes_in
        usage.objects_written = int(ok and event.operation in _OBJECT_WRITES)
    return usage


def usage_from_records(bodies: Iterable[Mapping[str, Any]]) -> dict[str, Usage]:
    """Each grant's use from its stored records: its `grant_usage` roll-ups when it has any (with `[audit]
    data_plane = "usage"`, which also chains whole-object reads as receipts, already counted in them),
    else its `s3_request` records, folded as the audit writer folds the requests themselves."""
    rolled: dict[str, Usage] = {}
    requested: dict[str, Usage] = {}
    for body in bodies:
        event = body.get("event") or {}
        if body.get("kind") == "grant_usage":
            found: Usage | None = _stored_usage(event)
            into = rolled
        elif body.get("kind") == "s3_request":
            found, into = usage_of(_stored_request(event)), requested
        else:
            continue
        if found is not None:
            if found.grant_id in into:
                into[found.grant_id].add(found)
            else:
                into[found.grant_id] = found
    return {**requested, **rolled}


def _stored_request(event: Mapping[str, Any]) -> RequestEvent:
    known = {k: v for k, v in event.items() if k in _REQUEST_FIELDS}
    known["grant_ids"] = tuple(known.get("grant_ids") or ())
    return RequestEvent(**known)


def _stored_usage(event: Mapping[str, Any]) -> Usage | None:
    if not event.get("grant_id"):
        return None
    first, last = event.get("first_used_at"), event.get("last_used_at")
    return Usage(
        str(event["grant_id"]),
        event.get("principal"),
        **{name: int(event.get(name) or 0) for name in USAGE_COUNTERS},
        first_used_at=parse_iso(first) if first else None,
        last_used_at=parse_iso(last) if last else None,
    )


_REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(RequestEvent))


# --- receipts ---------------------------------------------------------------------------------------


def fold_receipts(bodies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Receipts from stored `s3_request` records (oldest first): one row per principal, grant, object
    version and direction, with the bytes moved in all and whether any transfer of it completed."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for body in bodies:
        event = body.get("event") or {}
        if event.get("complete") is None or event.get("decision") != "allow":
            continue
        direction = "read" if event.get("action") == "read" else "write"
        moved = int(event.get("bytes_out" if direction == "read" else "bytes_in") or 0)
        ident = (
            body.get("principal"),
            body.get("grant_id"),
            event.get("bucket"),
            event.get("key"),
            event.get("version_id"),
            event.get("etag"),
            direction,
        )
        at = body.get("at")
        row = rows.get(ident)
        if row is None:
            rows[ident] = {
                "principal": ident[0],
                "grant_id": ident[1],
                "bucket": ident[2],
                "key": ident[3],
                "version_id": ident[4],
                "etag": ident[5],
                "direction": direction,
                "size": event.get("object_size"),
                "checksum": event.get("checksum"),
                "bytes": moved,
                "complete": bool(event["complete"]),
                "transfers": 1,
                "first_at": at,
                "last_at": at,
            }
            continue
        row["bytes"] += moved
        row["complete"] = row["complete"] or bool(event["complete"])
        row["transfers"] += 1
        row["last_at"] = at
        row["checksum"] = row["checksum"] or event.get("checksum")
    return list(rows.values())


def usage_record(usage: Usage, now: datetime) -> AuditRecord:
    return AuditRecord(
        kind="grant_usage",
        plane="usage",
        at=now,
        principal=usage.principal,
        grant_id=usage.grant_id,
        event=usage.as_dict(),
    )


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


# --- the chain ------------------------------------------------------------------------------------------


def link_hash(prev_hash: str, seq: int, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{seq}\n{body}".encode()).hexdigest()


def chain(
    records: list[AuditRecord], head_seq: int, head_hash: str, bodies: list[str] | None = None
) -> list[ChainedRow]:
    """Give records their places after the chain's head: consecutive numbers, each linked to the last.

    `bodies`, when given, are the records' bodies computed beforehand (see `bodies_of`)."""
    rows = []
    prev = head_hash
    for offset, record in enumerate(records, start=1):
        seq = head_seq + offset
        body = bodies[offset - 1] if bodies is not None else record.body()
        digest = link_hash(prev, seq, body)
        columns = {name: getattr(record, name) for name in COLUMNS}
        rows.append(ChainedRow(seq, columns, body, prev, digest))
        prev = digest
    return rows


# Records handled between two turns of the event loop. Every pass over a whole batch (building records,
# rendering, chaining) used to run in one go and hold up every request in flight for milliseconds.
SLICE = 32


async def sliced(items: Sequence[T], size: int = SLICE) -> AsyncIterator[Sequence[T]]:
    """`items` a slice at a time, with the event loop served after each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
        await asyncio.sleep(0)


async def bodies_of(records: list[AuditRecord]) -> list[str]:
    """The records' bodies, rendered a slice at a time."""
    bodies: list[str] = []
    async for part in sliced(records):
        bodies.extend(record.body() for record in part)
    return bodies


@dataclass(frozen=True, slots=True)
class Break:
    """The first link that does not hold, and what it means."""

    seq: int
    problem: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """A link of the chain as published outside the store (the `audit_anchor` log line): whoever can
    rewrite the store can rebuild a chain that verifies, but not one that still holds this link."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """ "SEQ:HASH", as the log line's fields give them."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or int(seq) < 1 or not _HEX64.fullmatch(digest):
            raise ValueError(f"invalid anchor {text!r}: expected SEQ:HASH, an event number and its hash")
        return cls(int(seq), digest.lower())

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass
class ChainVerifier:
    """Checks stored rows in sequence order, one at a time (the store pages through them), and that the
    chain still holds every anchor published earlier."""

    checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    broken: Break | None = None
    anchors: Mapping[int, str] = field(default_factory=dict)  # seq -> hash

    def feed(self, row: ChainedRow) -> bool:
        """Check one more row; False (and `broken` set) at the first problem."""
        if self.broken is not None:
            return False
        expected = self.last_seq + 1
        if row.seq != expected:
            missing = f"{expected}" if row.seq == expected + 1 else f"{expected}..{row.seq - 1}"
            return self._fail(row.seq, f"event {missing} is missing (deleted) before event {row.seq}")
        if not hmac.compare_digest(row.prev_hash, self.last_hash):
            return self._fail(row.seq, f"event {row.seq} does not link to event {self.last_seq}")
        if not hmac.compare_digest(link_hash(row.prev_hash, row.seq, row.body), row.hash):
            return self._fail(row.seq, f"event {row.seq} was altered: its content does not match its hash")
        mismatch = _column_mismatch(row)
        if mismatch:
            return self._fail(row.seq, f"event {row.seq} was altered: its {mismatch} column differs")
        anchored = self.anchors.get(row.seq)
        if anchored is not None and not hmac.compare_digest(anchored, row.hash):
            return self._fail(row.seq, f"event {row.seq} is not the one anchored: the chain was rebuilt")
        self.checked += 1
        self.last_seq, self.last_hash = row.seq, row.hash
        return True

    def finish(self, head_seq: int, head_hash: str) -> Break | None:
        """Compare the end of the rows with the chain head, which catches removed latest events."""
        if self.broken is None:
            first = self.last_seq + 1
            if head_seq > self.last_seq:
                missing = f"{first}..{head_seq}" if head_seq > first else str(head_seq)
                self._fail(first, f"event {missing} is missing (deleted): the chain ends at {head_seq}")
            elif head_seq < self.last_seq or not hmac.compare_digest(head_hash, self.last_hash):
                self._fail(head_seq, "the chain head does not match the last event (head altered)")
        beyond = min((seq for seq in self.anchors if seq > self.last_seq), default=None)
        if self.broken is None and beyond is not None:
            self._fail(beyond, f"event {beyond} was anchored but the chain ends at {self.last_seq}: cut back")
        return self.broken

    def _fail(self, seq: int, problem: str) -> bool:
        self.broken = Break(seq, problem)
        return False


def _column_mismatch(row: ChainedRow) -> str | None:
    try:
        body = json.loads(row.body)
    except ValueError:
        return "body"
    for name in COLUMNS:
        stored = row.columns.get(name)
        hashed = body.get(name)
        if name == "at":
            if not isinstance(stored, datetime) or not isinstance(hashed, str) or stored != parse_iso(hashed):
                return name
        elif stored != hashed:
            return name
    return None
