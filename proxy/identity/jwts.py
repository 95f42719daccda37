"""Signed JWTs checked as a relying party does (pure): the signature against the issuer's key set, then
the registered claims (issuer, audience, expiry, and whichever others must be present).

The web sign-in's ID token (control/oidc.py) and STS's web identity token (identity/webidentity.py)
are both checked here; each words a refusal in its own protocol's terms.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry


class Refusal(enum.Enum):
    UNKNOWN_KEY = "unknown_key"  # signed with a key the set does not hold (the issuer may have rotated)
    BAD_SIGNATURE = "bad_signature"
    UNDECODABLE = "undecodable"
    EXPIRED = "expired"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"  # `claim` names it (iss, aud, nbf...)
    INVALID = "invalid"


class TokenRefused(Exception):
    def __init__(self, refusal: Refusal, claim: str | None = None, detail: str = "") -> None:
        super().__init__(f"{refusal.value}: {claim or ''} {detail}".strip())
        self.refusal = refusal
        self.claim = claim
        self.detail = detail


class Issuer(Protocol):
    """Whose tokens are checked, and how: the settings of an OpenID provider or a workload issuer."""

    @property
    def issuer(self) -> str: ...
    @property
    def algorithms(self) -> list[str]: ...
    @property
    def leeway_seconds(self) -> int: ...


def checked_claims(
    token: str,
    keys: KeySet,
    issuer: Issuer,
    audiences: Sequence[str],
    now: datetime,
    required: Sequence[str] = ("sub", "exp"),
) -> dict[str, Any]:
    """The claims of `token` once its signature and claims hold at `now`; TokenRefused otherwise.

    The token must be signed by one of `keys` with one of the issuer's algorithms, come from the issuer,
    name one of `audiences` (in a single audience or a list), carry every claim in `required`, and
    exp/nbf/iat must hold within the issuer's leeway.
    """
    try:
        decoded = jwt.decode(token, keys, algorithms=issuer.algorithms)
    except InvalidKeyIdError:
        raise TokenRefused(Refusal.UNKNOWN_KEY) from None
    except JoseError:
        raise TokenRefused(Refusal.BAD_SIGNATURE) from None
    except (ValueError, TypeError, KeyError):
        raise TokenRefused(Refusal.UNDECODABLE) from None
    claims: dict[str, Any] = decoded.claims
    present: ClaimsOption = {"essential": True}
    registry = JWTClaimsRegistry(
        now=int(now.timestamp()),
        leeway=issuer.leeway_seconds,
        iss={"essential": True, "value": issuer.issuer},
        aud={"essential": True, "values": list(audiences)},
        **dict.fromkeys(required, present),
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise TokenRefused(Refusal.EXPIRED) from None
    except MissingClaimError as exc:
        raise TokenRefused(Refusal.MISSING_CLAIM, exc.claim) from None
    except InvalidClaimError as exc:
        raise TokenRefused(Refusal.INVALID_CLAIM, exc.claim, exc.description or exc.error) from None
    except JoseError as exc:
        raise TokenRefused(Refusal.INVALID, None, exc.description or exc.error) from None
    return claims
