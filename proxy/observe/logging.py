"""structlog set-up: JSON lines on stdout, request fields merged from contextvars, secrets redacted."""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
import structlog
from structlog.typing import EventDict

from proxy.audit.text import writable

# Defence in depth: nothing that could carry a credential is ever rendered, whatever a caller logs.
_SECRET_FIELD = re.compile(
    r"secret|password|passwd|signature|authorization|token|credential|cookie|api_key", re.IGNORECASE
)
REDACTED = "[redacted]"


def redact_secrets(_logger: Any, _method: str, event: EventDict) -> EventDict:
    # Every request's audit line has ~30 fields, nearly always names already seen to be harmless:
    # one set comparison in C instead of a check per field.
    if event.keys() <= _HARMLESS_NAMES:
        return event
    for name in event:
        if _is_secret_name(name):
            event[name] = REDACTED
        elif len(_HARMLESS_NAMES) < _HARMLESS_NAMES_LIMIT:
            _HARMLESS_NAMES.add(name)
    return event


# Field names that matched no secret pattern. They come from code, not requests, so the set stays
# small; the limit only bounds it should some caller log with generated names.
_HARMLESS_NAMES: set[str] = set()
_HARMLESS_NAMES_LIMIT = 4096


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    return _SECRET_FIELD.search(name) is not None


def add_utc_timestamp(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """structlog's TimeStamper(fmt="iso", utc=True), same text ("2025-01-31T08:00:00.123456Z"), with
    the date and time of day formatted once per second instead of once per line."""
    second, nanos = divmod(time.time_ns(), 1_000_000_000)
    micros = nanos // 1000  # datetime.now() truncates to the microsecond too
    # isoformat() leaves the fraction out when it is zero.
    event["timestamp"] = f"{_iso_second(second)}.{micros:06d}Z" if micros else f"{_iso_second(second)}Z"
    return event


@functools.lru_cache(maxsize=4)
def _iso_second(unix_second: int) -> str:
    return datetime.fromtimestamp(unix_second, UTC).replace(tzinfo=None).isoformat()


class CoalescedOutput:
    """A binary stream for log lines: the lines written during one turn of the event loop leave in one
    write. Under load a worker handles many requests per turn, and a write per audit line was a
    system call per request. Nothing waits longer than that turn; without a running loop (the CLI,
    another thread) a line is written at once, and whatever is pending at exit is written then."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pending: list[bytes] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        atexit.register(self.drain)

    def write(self, data: bytes) -> None:
        with self._lock:
            self._pending.append(data)

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()
            return
        if self._scheduled_on is not loop:  # a loop that stopped never runs what it was given
            self._scheduled_on = loop
            loop.call_soon(self.drain)

    def drain(self) -> None:
        with self._lock:
            self._scheduled_on = None
            if not self._pending:
                return
            data = b"".join(self._pending)
            self._pending.clear()
            self._out.write(data)
            self._out.flush()


def _json_line(value: Any, **options: Any) -> bytes:
    try:
        return orjson.dumps(value, **options)
    except TypeError:  # text from the wire that is not UTF-8, say: the line is still written
        return orjson.dumps(writable(value), default=repr, **options)


@dataclass
class _Lines:
    """Where JSON lines go, once configure_logging has set them up, and whether info lines are wanted."""

    output: CoalescedOutput | None = None
    info: bool = True
    factory: Any = None  # structlog's logger factory they were set up with: still in force?


_LINES = _Lines()


def write_info_lines(event: str, rows: list[dict[str, Any]]) -> bool:
    """Write one info line per row, the very line `log.info(event, **row)` would write (fields, event,
    level, timestamp; secrets redacted), rendered in one pass: observers of a batch of requests need
    not run the processor chain once per request. False if lines are not JSON: log them one by one."""
    lines = _LINES
    if lines.output is None or structlog.get_config()["logger_factory"] is not lines.factory:
        return False
    if not lines.info or not rows:
        return True
    stamp = add_utc_timestamp(None, "info", {})["timestamp"]  # one moment for the batch
    rendered = []
    for row in rows:
        row["event"], row["level"], row["timestamp"] = event, "info", stamp
        rendered.append(_json_line(redact_secrets(None, "info", row)) + b"\n")
    lines.output.write(b"".join(rendered))
    # Already a turn after the requests' answers: write now (with any other pending line), in one call.
    lines.output.drain()
    return True


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    # orjson: the audit line is written once per request, and rendering it with the standard library
    # cost more than verifying the request's signature.
    json_lines = fmt == "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    filter_level = logging.getLevelNamesMapping()[level.upper()]
    output = CoalescedOutput(sys.stdout.buffer) if json_lines else None
    factory: Any = (
        # structlog's stub asks for a BinaryIO; its BytesLogger only calls write() and flush().
        structlog.BytesLoggerFactory(output)  # type: ignore[arg-type]
        if output is not None
        else structlog.WriteLoggerFactory(sys.stdout)
    )
    _LINES.output, _LINES.info, _LINES.factory = output, filter_level <= logging.INFO, factory
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_utc_timestamp,
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(filter_level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # aiohttp's own access log would duplicate the audit event without the fields that matter.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
