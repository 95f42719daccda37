"""The web session: a small signed cookie (who is signed in, the CSRF token, flash messages); pure.

Signed, not encrypted: it holds nothing the browser's own user may not read, and HttpOnly keeps it
away from scripts. The key is derived from the server key, so no extra secret has to be managed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

MAX_COOKIE = 3800  # browsers keep at least 4096 bytes per cookie, name and attributes included


def session_key(server_key: bytes) -> bytes:
    return hmac.new(server_key, b"grantgate web session v1", hashlib.sha256).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    expires: int  # unix seconds
    user: str | None = None
    via: str = ""  # how the user signed in: dev, oidc, headers
    flashes: tuple[tuple[str, str], ...] = ()  # (kind, text) shown once on the next page
    pending: dict[str, str] = field(default_factory=dict)  # an OpenID sign-in in progress
    sid: str = ""  # the store's record of a signed-in session (proxy/store/web_sessions.py)

    @classmethod
    def fresh(cls, now: datetime, lifetime: timedelta) -> Session:
        return cls(csrf=new_token(), expires=int((now + lifetime).timestamp()))

    def signed_in(self, user: str, via: str, now: datetime, lifetime: timedelta, sid: str = "") -> Session:
        """A new session for `user`: a new CSRF token too, so one taken before sign-in is worthless."""
        return Session(
            csrf=new_token(),
            expires=int((now + lifetime).timestamp()),
            user=user,
            via=via,
            flashes=self.flashes,
            sid=sid,
        )

    def flash(self, kind: str, text: str) -> Session:
        return replace(self, flashes=(*self.flashes, (kind, text))[-4:])

    def without_flashes(self) -> Session:
        return replace(self, flashes=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "c": self.csrf,
            "e": self.expires,
            "u": self.user,
            "v": self.via,
            "f": [list(f) for f in self.flashes],
            "p": self.pending,
            "s": self.sid,
        }


def encode(session: Session, key: bytes) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(session.as_dict(), separators=(",", ":")).encode())
    body = payload.rstrip(b"=").decode()
    return f"{body}.{_sign(body, key)}"


def decode(cookie: str | None, key: bytes, now: datetime) -> Session | None:
    """The session in `cookie`, or None when it is absent, tampered with, malformed or expired."""
    if not cookie or len(cookie) > MAX_COOKIE or "." not in cookie:
        return None
    body, _, signature = cookie.rpartition(".")
    if not hmac.compare_digest(signature, _sign(body, key)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        session = Session(
            csrf=str(data["c"]),
            expires=int(data["e"]),
            user=data["u"] if isinstance(data["u"], str) else None,
            via=str(data.get("v", "")),
            flashes=tuple((str(k), str(t)) for k, t in data.get("f", [])),
            pending={str(k): str(v) for k, v in dict(data.get("p") or {}).items()},
            sid=str(data.get("s") or ""),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if session.expires <= now.timestamp():
        return None
    return session


def _sign(body: str, key: bytes) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
