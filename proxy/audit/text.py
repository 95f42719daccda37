"""Text from the wire made writable: to a JSON line, the audit trail, a Unix socket or a Slack message.

aiohttp decodes header bytes that are not UTF-8 with `surrogateescape`, so an unsigned header such as
User-Agent can carry lone surrogates. No UTF-8 encoder accepts them: left in, one request's record would
fail its log line and every retry of the audit batch it is in.
"""

from __future__ import annotations

import math
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean_text(value: str) -> str:
    """`value` with each lone surrogate (an undecodable byte) replaced by U+FFFD."""
    if value.isascii():
        return value
    return _SURROGATE.sub(REPLACEMENT, value)


def writable(value: Any) -> Any:
    """A JSON-able value made encodable anywhere: text cleaned (keys too), NaN and infinities as null."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {writable(k) if isinstance(k, str) else k: writable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [writable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
