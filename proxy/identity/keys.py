"""Long-lived access keys: random ids, and secrets derived from the server key so no secret is ever stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

# RFC 4648 base32 alphabet: upper case, no 0/1/8/9, like AWS's own key ids.
KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
KEY_ID_PREFIX = "GG"
TEMPORARY_KEY_ID_PREFIX = "GGT"
KEY_ID_LENGTH = 20  # as long as an AWS key id, so tools that check the length accept ours
SECRET_LENGTH = 40

# A long-lived id never has "T" right after the prefix: "GGT" alone marks a temporary key.
_FIRST_CHAR_LONG_LIVED = KEY_ID_ALPHABET.replace("T", "")
_ACCESS_KEY_LABEL = b"grantgate/access-key/v1/"


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key_id: str
    principal: str
    created_at: datetime
    revoked_at: datetime | None = None
    description: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_access_key_id(*, temporary: bool = False) -> str:
    """A fresh random key id: "GG" + 18 base32 characters; temporary ones start with "GGT"."""
    head = TEMPORARY_KEY_ID_PREFIX if temporary else KEY_ID_PREFIX + secrets.choice(_FIRST_CHAR_LONG_LIVED)
    return head + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH - len(head)))


def is_temporary_key_id(access_key_id: str) -> bool:
    return access_key_id.startswith(TEMPORARY_KEY_ID_PREFIX)


def derive_secret(server_key: bytes, access_key_id: str) -> str:
    """The secret of a long-lived key: 40 base64 characters, recomputable only with the server key."""
    return hmac_secret(server_key, _ACCESS_KEY_LABEL, access_key_id)


def hmac_secret(server_key: bytes, label: bytes, access_key_id: str) -> str:
    """HMAC-SHA256(server_key, label + id), base64, cut to the length of an AWS secret key."""
    if not server_key:
        raise ValueError("server key must not be empty")
    digest = hmac.new(server_key, label + access_key_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()[:SECRET_LENGTH]
