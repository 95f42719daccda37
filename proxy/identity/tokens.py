"""API bearer tokens: `ggt_<id>_<secret>`; only a SHA-256 of the secret is stored (pure).

The secret has 256 random bits, so a plain hash is enough: nothing to brute-force, no need for a slow KDF.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

PREFIX = "ggt"
_TOKEN = re.compile(r"ggt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    principal: str
    created_at: datetime
    revoked_at: datetime | None = None
    description: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_token() -> tuple[str, str]:
    """A fresh (token id, full token string). The full string is shown once and never stored."""
    token_id = secrets.token_hex(8)
    return token_id, f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


def parse_token(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token, else None."""
    match = _TOKEN.fullmatch(token.strip())
    return (match.group(1), match.group(2)) if match else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
