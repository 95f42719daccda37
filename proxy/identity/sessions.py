"""Temporary credentials whose session token carries its own sealed claims, so checking one needs no lookup.

Token: "ggs1." + base64url(nonce || AES-GCM(claims)), sealed with a key derived from the server key and bound
to the temporary access key id (associated data), so a token cannot be moved to another key id.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.errors import S3Error
from proxy.identity.keys import hmac_secret, is_temporary_key_id, new_access_key_id
from proxy.identity.principals import Principal

TOKEN_PREFIX = "ggs1."  # noqa: S105 - a format marker, not a secret
_CLAIMS_VERSION = 1
_NONCE_BYTES = 12
_HKDF_INFO = b"grantgate/session/v1"
# Not the long-lived keys' label: a session secret must never equal some long-lived key's secret.
_SESSION_SECRET_LABEL = b"grantgate/session-key/v1/"
# Bounds what we try to decode: a real token is a few hundred characters.
_MAX_TOKEN_LENGTH = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class TemporaryCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime


@dataclass(frozen=True, slots=True)
class SessionClaims:
    principal: Principal
    access_key_id: str
    issued_at: datetime
    expires_at: datetime
    source: str


def derive_session_secret(server_key: bytes, access_key_id: str) -> str:
    return hmac_secret(server_key, _SESSION_SECRET_LABEL, access_key_id)


def issue_session(
    server_key: bytes, principal: Principal, *, now: datetime, ttl: timedelta, source: str = "cli"
) -> TemporaryCredentials:
    """New temporary credentials for `principal`, valid from `now` for `ttl` (whole seconds)."""
    if ttl.total_seconds() < 1:
        raise ValueError("session lifetime must be at least one second")
    issued = _epoch_seconds(now)
    expires = issued + int(ttl.total_seconds())
    access_key_id = new_access_key_id(temporary=True)
    claims = {
        "v": _CLAIMS_VERSION,
        "p": principal.name,
        "g": sorted(principal.groups),
        "iat": issued,
        "exp": expires,
        "src": source,
    }
    plaintext = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _cipher(server_key).encrypt(nonce, plaintext, access_key_id.encode())
    token = TOKEN_PREFIX + _b64(nonce + sealed)
    return TemporaryCredentials(
        access_key_id=access_key_id,
        secret_access_key=derive_session_secret(server_key, access_key_id),
        session_token=token,
        expiration=datetime.fromtimestamp(expires, UTC),
    )


def open_session(server_key: bytes, access_key_id: str, token: str, *, now: datetime) -> SessionClaims:
    """Unseal and check a session token sent with `access_key_id`.

    Raises S3Error InvalidToken for anything malformed, tampered with or sealed for another key id or
    server key, and ExpiredToken once `now` reaches its expiry.
    """
    try:
        claims = _unseal(server_key, access_key_id, token)
    except (ValueError, TypeError, KeyError, InvalidTag, binascii.Error, UnicodeError):
        raise S3Error.invalid_token() from None
    if now >= claims.expires_at:
        raise S3Error.expired_token()
    return claims


def _unseal(server_key: bytes, access_key_id: str, token: str) -> SessionClaims:
    if not is_temporary_key_id(access_key_id):
        raise ValueError("not a temporary access key id")
    if len(token) > _MAX_TOKEN_LENGTH or not token.startswith(TOKEN_PREFIX):
        raise ValueError("not a session token")
    body = token[len(TOKEN_PREFIX) :]
    if not _BASE64URL.fullmatch(body):
        raise ValueError("token is not base64url")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    # One spelling per token: the decoder would otherwise accept variants with different trailing bits.
    if _b64(raw) != body:
        raise ValueError("token is not canonical base64url")
    if len(raw) <= _NONCE_BYTES:
        raise ValueError("token too short")
    plaintext = _cipher(server_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], access_key_id.encode())
    data = json.loads(plaintext)
    if data["v"] != _CLAIMS_VERSION:
        raise ValueError("unknown claims version")
    name, groups, iat, exp, source = data["p"], data["g"], data["iat"], data["exp"], data["src"]
    if not isinstance(name, str) or not isinstance(source, str):
        raise TypeError("bad claim types")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise TypeError("bad groups claim")
    if type(iat) is not int or type(exp) is not int:
        raise TypeError("bad time claims")
    return SessionClaims(
        principal=Principal(name, frozenset(groups)),
        access_key_id=access_key_id,
        issued_at=datetime.fromtimestamp(iat, UTC),
        expires_at=datetime.fromtimestamp(exp, UTC),
        source=source,
    )


@lru_cache(maxsize=4)
def _cipher(server_key: bytes) -> AESGCM:
    # Cached: tokens are opened on the request path, and HKDF per request would be wasted work.
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(server_key)
    return AESGCM(key)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _epoch_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return int(moment.timestamp())
