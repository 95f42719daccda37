"""What the audit writer appends through: the audit store itself, or the spool in front of it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from proxy.audit.records import AuditRecord, Usage

# (resource, group, principal, first seen): a group's first read of a resource, for the anomaly rules.
Reader = tuple[str, str, str, datetime]


class AuditSink(Protocol):
    async def append(self, records: list[AuditRecord], usage: Iterable[Usage] = ()) -> int:
        """Append `records` after the chain head and add `usage`; returns the new head's seq."""
        ...

    async def remember_readers(self, items: Iterable[Reader]) -> None: ...
