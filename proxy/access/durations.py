"""Durations as people type them ("2h", "1h30m", "7d") and back, and moments as JSON shows them; pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS: dict[str, int] = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"([0-9]+)([wdhms])")
_WHOLE = re.compile(r"(?:[0-9]+[wdhms])+")


def iso(moment: datetime | None) -> str | None:
    """A moment as JSON shows it: UTC, to the second, with a Z (None stays None)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_duration(text: str) -> timedelta:
    """Parse "2h", "30m", "90s", "7d", "1w" or "1h30m"; ValueError unless well formed and positive.

    Units are w, d, h, m, s, each at most once and largest first.
    """
    value = text.strip().lower()
    if not _WHOLE.fullmatch(value):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (w, d, h, m, s), e.g. 2h, 30m, 7d or 1h30m"
        )
    parts = _PART.findall(value)
    units = [unit for _, unit in parts]
    order = list(_UNITS)
    if len(set(units)) != len(units) or units != sorted(units, key=order.index):
        raise ValueError(f"invalid duration {text!r}: give each unit once, largest first (e.g. 1h30m)")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """timedelta -> "1h30m", in whole seconds (truncated): parse_duration(format_duration(d)) == d."""
    total = int(delta.total_seconds())
    sign = "-" if total < 0 else ""
    remaining = abs(total)
    if remaining == 0:
        return "0s"
    out = []
    for unit, size in _UNITS.items():
        count, remaining = divmod(remaining, size)
        if count:
            out.append(f"{count}{unit}")
    return sign + "".join(out)


def format_remaining(delta: timedelta) -> str:
    """A coarse "expires in" for humans: the two largest units ("6d23h", "1h59m", "45s")."""
    full = format_duration(delta)
    if full.startswith("-"):
        return full
    parts = _PART.findall(full)
    return "".join(f"{n}{u}" for n, u in parts[:2])


def parse_moment(text: str) -> datetime:
    """An RFC 3339 timestamp with its offset (`2025-06-01T22:00:00Z`, `...+02:00`) -> an aware datetime.

    A time without an offset is refused rather than guessed at: the server's zone is nobody's business.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time, e.g. 2025-06-01T22:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z or an offset such as +02:00")
    return moment.astimezone(UTC)
