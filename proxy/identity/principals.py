"""Who is asking: principals (a name and its groups) and the authenticated caller of one request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    access_key_id: str
    temporary: bool = False  # authenticated with a session token rather than a long-lived key
