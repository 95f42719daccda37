"""Times and durations as the web pages show them ("expires in 1h 20m", "3m ago"); pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def span(delta: timedelta) -> str:
    """The two largest units of a positive span, spaced for reading: "1h 20m", "3d 4h", "45s"."""
    remaining = max(int(delta.total_seconds()), 0)
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    # Seconds only matter while nothing larger is left.
    if len(parts) > 1 and parts[-1].endswith("s") and not parts[0].endswith("m"):
        parts = [p for p in parts if not p.endswith("s")] or parts
    return " ".join(parts[:2])


def until(moment: datetime | None, now: datetime) -> str:
    """ "in 1h 20m", "now", or "no expiry" for an open-ended moment."""
    if moment is None:
        return "no expiry"
    if moment <= now:
        return "now"
    return "in " + span(moment - now)


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    if moment > now + timedelta(seconds=5):  # a scheduled start, an extension's
        return "in " + span(moment - now)
    if moment >= now - timedelta(seconds=5):
        return "just now"
    return span(now - moment) + " ago"


def timestamp(moment: datetime | None) -> str:
    """The exact time, for a tooltip next to the relative one."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
