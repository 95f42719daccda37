"""structlog set-up: JSON lines on stdout, request fields merged from contextvars, secrets redacted."""

from __future__ import annotations

import functools
import logging
import re
import sys
from typing import Any

import orjson
import structlog

# Defence in depth: nothing that could carry a credential is ever rendered, whatever a caller logs.
_SECRET_FIELD = re.compile(
    r"secret|password|passwd|signature|authorization|token|credential|cookie|api_key", re.IGNORECASE
)
REDACTED = "[redacted]"


def redact_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in event:
        if _is_secret_name(name):
            event[name] = REDACTED
    return event


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    # Field names come from code, not requests, so the cache stays small; every request's audit line
    # goes through this ~30 times.
    return _SECRET_FIELD.search(name) is not None


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    # orjson: the audit line is written once per request, and rendering it with the standard library
    # cost more than verifying the request's signature.
    json_lines = fmt == "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=orjson.dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=(
            structlog.BytesLoggerFactory(sys.stdout.buffer)
            if json_lines
            else structlog.WriteLoggerFactory(sys.stdout)
        ),
        cache_logger_on_first_use=True,
    )
    # aiohttp's own access log would duplicate the audit event without the fields that matter.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
