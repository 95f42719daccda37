"""Dataset terms: the text a resource is taken under, and a requester's proof of having read it (pure).

A client acknowledges terms by sending the SHA-256 of the exact text it showed: a hash of older text
(the terms changed since) or none at all is refused, so nobody accepts words they never saw.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proxy.access.durations import iso, parse_moment


def terms_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TermsAcceptance:
    """Who accepted which text, and when: kept with the request and each grant it makes."""

    by: str
    sha256: str
    text: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "sha256": self.sha256, "text": self.text, "at": iso(self.at)}

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> TermsAcceptance | None:
        """As stored (a JSON column); None when nothing was accepted."""
        if not value:
            return None
        return cls(value["by"], value["sha256"], value["text"], parse_moment(value["at"]))


def accepted(terms: str, offered: str) -> bool:
    """Whether `offered` (a hex SHA-256 from the client) is the hash of `terms` as they stand."""
    return hmac.compare_digest(offered.strip().lower().encode(), terms_sha256(terms).encode())
