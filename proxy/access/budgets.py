"""Byte budgets and read-once grants (pure): what a grant may still move, and which bytes it has served.

A budget caps the bytes a grant serves (`max_bytes`), the distinct objects it reads (`max_objects`), and
with `single_use` serves each byte of each object at most once, however the reads are split into ranges.
The ledger itself lives in the store (proxy/store/budgets.py); this module holds the values and the
interval arithmetic it applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Ranges are half-open [start, end) byte offsets.
Span = tuple[int, int]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "p": 1000**5,
    "pb": 1000**5,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
    "pi": 1024**5,
    "pib": 1024**5,
}


def parse_size(text: str | int) -> int:
    """`10GiB`, `500MB`, `1048576` -> bytes. Raises ValueError on anything else or a negative size."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a size cannot be negative, got {text}")
        return text
    match = _SIZE.match(str(text))
    if match is None or (match.group(2) or "").lower() not in _UNITS:
        raise ValueError(f"invalid size {text!r}: use bytes or a unit, e.g. 500MB, 10GiB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def format_size(count: int) -> str:
    """Bytes for people: 10737418240 -> `10 GiB`, 1536 -> `1.5 KiB`."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def describe(budget: Budget | None, usage: Usage | None = None) -> str:
    """A budget in one line for people, with its use if given: `1.5 GiB of 10 GiB, 1 of 4 objects,
    single-use`; without: `10 GiB, 4 objects, single-use`."""
    if budget is None:
        return "-"
    parts = []
    if budget.max_bytes is not None:
        used = "" if usage is None else f"{format_size(usage.bytes)} of "
        parts.append(f"{used}{format_size(budget.max_bytes)}")
    if budget.max_objects is not None:
        used = "" if usage is None else f"{usage.objects} of "
        parts.append(f"{used}{budget.max_objects} objects")
    if budget.single_use:
        parts.append("single-use")
    return ", ".join(parts)


def describe_json(budget: Mapping[str, Any] | None, usage: Mapping[str, Any] | None) -> str:
    """`describe` for a grant as the API returns it (`budget` and `usage` fields)."""
    return describe(Budget.from_dict(budget), Usage(**(usage or {})))


@dataclass(frozen=True, slots=True)
class Budget:
    """What a grant may move in all. None: no limit of that kind."""

    max_bytes: int | None = None
    max_objects: int | None = None
    single_use: bool = False

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_objects"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")

    @property
    def limited(self) -> bool:
        return self.max_bytes is not None or self.max_objects is not None or self.single_use

    def as_dict(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes, "max_objects": self.max_objects, "single_use": self.single_use}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Budget | None:
        """The budget a request or rule asked for; None for none. Sizes may be `10GiB` strings."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ValueError("budget must be an object with max_bytes, max_objects and single_use")
        unknown = set(data) - {"max_bytes", "max_objects", "single_use"}
        if unknown:
            raise ValueError(f"unknown budget field(s): {', '.join(sorted(unknown))}")
        single = data.get("single_use", False)
        if not isinstance(single, bool):
            raise ValueError("single_use must be true or false")
        max_bytes = data.get("max_bytes")
        max_objects = data.get("max_objects")
        if isinstance(max_objects, bool) or (max_objects is not None and not isinstance(max_objects, int)):
            raise ValueError("max_objects must be a whole number")
        budget = cls(None if max_bytes is None else parse_size(max_bytes) or None, max_objects, single)
        return budget if budget.limited else None


@dataclass(frozen=True, slots=True)
class Usage:
    """What a grant has moved so far: bytes served (reserved, while a transfer is in flight) and the
    distinct objects read."""

    bytes: int = 0
    objects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"bytes": self.bytes, "objects": self.objects}


def tighter(asked: Budget | None, default: Budget | None, maximum: Budget | None) -> Budget | None:
    """The budget a grant gets: what was asked (else the rule's default), held within the rule's
    maximum. A maximum applies even when nothing was asked."""
    chosen = asked if asked is not None else default
    if maximum is None:
        return chosen
    chosen = chosen or Budget()
    return Budget(
        _smaller(chosen.max_bytes, maximum.max_bytes),
        _smaller(chosen.max_objects, maximum.max_objects),
        chosen.single_use or maximum.single_use,
    )


def exceeds(asked: Budget | None, maximum: Budget | None) -> str | None:
    """Why `asked` is looser than the rule's `maximum`, or None."""
    if maximum is None:
        return None
    asked = asked or Budget()
    for name in ("max_bytes", "max_objects"):
        cap = getattr(maximum, name)
        wanted = getattr(asked, name)
        if cap is not None and (wanted is None or wanted > cap):
            return f"{name} may be at most {cap}"
    if maximum.single_use and not asked.single_use:
        return "this resource's grants are single-use"
    return None


def _smaller(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# --- byte ranges served, for single-use grants --------------------------------------------------------


def merged(spans: Iterable[Span]) -> list[Span]:
    """Sorted, non-overlapping, adjacent spans joined."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def overlaps(spans: Iterable[Span], span: Span) -> bool:
    start, end = span
    return any(s < end and start < e for s, e in spans)


def without(spans: Iterable[Span], span: Span) -> list[Span]:
    """`spans` minus `span`: a claimed range given back when its transfer was cut."""
    start, end = span
    out: list[Span] = []
    for s, e in spans:
        if e <= start or end <= s:
            out.append((s, e))
            continue
        if s < start:
            out.append((s, start))
        if end < e:
            out.append((end, e))
    return merged(out)


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def served_span(status: int, content_range: str | None, content_length: int | None) -> Span | None:
    """The bytes of the object a GET answer carries, from its status and headers; None if unknown."""
    if status == 206 and content_range:
        match = _CONTENT_RANGE.match(content_range.strip())
        if match is None:
            return None
        return int(match.group(1)), int(match.group(2)) + 1
    if status == 200 and content_length is not None:
        return 0, content_length
    return None
