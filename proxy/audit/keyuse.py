"""Which objects a grant was used on most (pure): per-key totals from its stored `s3_request` records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KeyUse:
    target: str  # s3://bucket/key (or the prefix a listing covered)
    requests: int
    bytes_read: int
    bytes_written: int
    last_at: str

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "requests": self.requests,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "last_at": self.last_at,
        }


def top_keys(bodies: Iterable[Mapping[str, Any]], n: int) -> list[KeyUse]:
    """The `n` targets that moved the most bytes (then: the most requests), from allowed requests only.

    Bytes are counted as the usage counters count them: sent to the client under a read, received from
    it under anything else."""
    totals: dict[str, list[Any]] = {}
    for body in bodies:
        event = body.get("event") or {}
        target = body.get("target")
        if body.get("kind") != "s3_request" or event.get("decision") != "allow" or not target:
            continue
        row = totals.setdefault(target, [0, 0, 0, ""])
        row[0] += 1
        if event.get("action") == "read":
            row[1] += int(event.get("bytes_out") or 0)
        else:
            row[2] += int(event.get("bytes_in") or 0)
        row[3] = max(row[3], str(body.get("at") or ""))
    found = [KeyUse(target, *row) for target, row in totals.items()]
    found.sort(key=lambda k: (-k.bytes, -k.requests, k.target))
    return found[:n]
