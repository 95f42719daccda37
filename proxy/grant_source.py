"""What the gateway's in-memory view is loaded from: a source of grants and keys with a change counter.

The SQL store is the one in production; a test or another store provides the same two calls. Kept apart
from the store so the live state depends on this narrow interface, not on SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from proxy.access.grants import Grant
from proxy.identity.keys import AccessKey
from proxy.identity.principals import Principal


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a gateway needs in memory, read in one transaction: grants in force, keys, and the version.

    A full snapshot (`since` None) holds every grant in force and every active key. A snapshot of
    changes holds only what changed after version `since`: the grants now in force in `grants`, the
    others in `retired`, and in `keys` the keys created, revoked (to drop) or whose principal's groups
    changed. Session cut-offs are always whole: one row per principal who ever lost a grant.
    """

    version: int
    grants: tuple[Grant, ...]
    keys: tuple[tuple[AccessKey, Principal], ...]
    # Per principal: session tokens issued before this time are refused (see store/sessions.py).
    sessions_not_before: Mapping[str, datetime] = field(default_factory=dict)
    since: int | None = None
    retired: tuple[Grant, ...] = ()


class GrantSource(Protocol):
    """The store as the live state sees it: a counter bumped by every change, and snapshots."""

    async def version(self) -> int:
        """The change counter: it moves whenever a grant, key or principal's groups change."""
        ...

    async def snapshot(self, now: datetime, *, since: int | None = None) -> Snapshot:
        """Every grant in force at `now` and every active key; with `since`, only what changed after
        that version (a source may answer a full snapshot instead, with `since` None in it)."""
        ...
