"""Web identity tokens (Kubernetes service-account tokens, OIDC ID tokens): verified with joserfc.

Pure: the caller passes the issuer's key set and `now`; fetching keys is jwks.py's job.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc.jwk import KeySet

from proxy.identity.jwts import Refusal, TokenRefused, checked_claims
from proxy.identity.trust import IssuerSettings

# STS's own limit on WebIdentityToken.
MAX_TOKEN_LENGTH = 20000


class IdentityError(Exception):
    """A refusal in STS terms: the error code, a message for the caller, the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class UnknownKeyId(IdentityError):
    """The token names a key the current key set does not hold: the issuer may have rotated keys."""

    def __init__(self) -> None:
        super().__init__("InvalidIdentityToken", "The token was signed with an unknown key.")


def invalid_token(message: str) -> IdentityError:
    return IdentityError("InvalidIdentityToken", message)


@dataclass(frozen=True, slots=True)
class WebIdentity:
    issuer: str
    subject: str
    audience: str  # the configured audience the token carried
    claims: Mapping[str, Any]
    expires_at: datetime


def unverified_issuer(token: str) -> str:
    """The `iss` a token claims, read before verification only to choose whose keys verify it."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise invalid_token("The web identity token is empty or too long.")
    parts = token.split(".")
    if len(parts) != 3:
        raise invalid_token("The web identity token is not a signed JWT.")
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_token("The web identity token could not be decoded.") from None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    if not isinstance(issuer, str) or not issuer:
        raise invalid_token("The web identity token has no issuer (iss).")
    return issuer


def verify_token(token: str, settings: IssuerSettings, keys: KeySet, now: datetime) -> WebIdentity:
    """Check signature, issuer, audience and expiry (nbf/iat too) of `token`; IdentityError if any fails."""
    try:
        claims = checked_claims(token, keys, settings, settings.audiences, now)
    except TokenRefused as refused:
        raise _refusal(refused) from None
    subject, exp = claims.get("sub"), claims.get("exp")
    if not isinstance(subject, str) or not subject or type(exp) is not int:
        raise invalid_token("The web identity token's sub or exp claim has the wrong type.")
    return WebIdentity(
        issuer=settings.issuer,
        subject=subject,
        audience=_matched_audience(claims.get("aud"), settings.audiences),
        claims=claims,
        expires_at=datetime.fromtimestamp(exp, UTC),
    )


def _refusal(refused: TokenRefused) -> IdentityError:
    """A refused token in STS's own words."""
    match refused.refusal, refused.claim:
        case Refusal.UNKNOWN_KEY, _:
            return UnknownKeyId()
        case Refusal.BAD_SIGNATURE, _:
            return invalid_token("The web identity token's signature could not be verified.")
        case Refusal.UNDECODABLE, _:
            return invalid_token("The web identity token could not be decoded.")
        case Refusal.EXPIRED, _:
            return IdentityError("ExpiredTokenException", "Token expired: the web identity token is expired.")
        case Refusal.MISSING_CLAIM, claim:
            return invalid_token(f"The web identity token lacks a required claim: {claim}.")
        case Refusal.INVALID_CLAIM, "aud":
            return invalid_token("Incorrect token audience.")
        case Refusal.INVALID_CLAIM, "iss":
            return invalid_token("Incorrect token issuer.")
        case Refusal.INVALID_CLAIM, claim:
            return invalid_token(f"The web identity token has an invalid claim: {claim}.")
    return invalid_token("The web identity token's claims are not valid.")


def _matched_audience(aud: Any, wanted: list[str]) -> str:
    carried = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return next((a for a in carried if a in wanted), wanted[0])
