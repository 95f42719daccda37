"""OpenID Connect sign-in: discovery, the authorization request with PKCE, the code exchange, and
verification of the ID token (signature against the issuer's JWKS, issuer, audience, expiry, nonce).

Verification (`verify_id_token`) is pure; `OidcClient` holds the I/O at the edge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
import structlog
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from proxy.control.web_settings import OidcSettings
from proxy.identity.jwks import parse_key_set
from proxy.identity.jwts import Refusal, TokenRefused, checked_claims
from proxy.identity.trust import WORKLOAD_PREFIX, is_workload_name

log = structlog.get_logger("grantgate.oidc")

TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_DOCUMENT = 1024 * 1024
DISCOVERY_TTL = 3600.0
MIN_REFETCH_SECONDS = 10.0


class SignInError(Exception):
    """A failed sign-in, with a message fit to show on the sign-in page."""


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    groups: tuple[str, ...] | None  # None: the provider does not manage groups (no groups claim set)


@dataclass(frozen=True, slots=True)
class AuthStart:
    """Where to send the browser, and what to remember until it comes back."""

    url: str
    state: str
    nonce: str
    verifier: str


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_url(
    endpoint: str, settings: OidcSettings, redirect_uri: str, state: str, nonce: str, verifier: str
) -> str:
    query = {
        "response_type": "code",
        "client_id": settings.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(settings.scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    separator = "&" if "?" in endpoint else "?"
    return endpoint + separator + urlencode(query)


def basic_auth(client_id: str, secret: str) -> str:
    """client_secret_basic: both parts form-urlencoded first (RFC 6749 2.3.1)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def verify_id_token(token: str, settings: OidcSettings, keys: KeySet, nonce: str, now: datetime) -> Identity:
    """Check the ID token as OpenID Connect Core 3.1.3.7 asks; SignInError on any failure."""
    try:
        claims = checked_claims(token, keys, settings, [settings.client_id], now, ("sub", "exp", "iat"))
    except TokenRefused as refused:
        raise SignInError(
            _SIGN_IN_REFUSALS[refused.refusal].format(claim=refused.claim, detail=refused.detail)
        ) from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != settings.client_id:
        raise SignInError("the ID token was issued to another client (azp)")
    carried = claims.get("nonce")
    if not isinstance(carried, str) or not hmac.compare_digest(carried.encode(), nonce.encode()):
        # A token from another sign-in (replayed, or injected into this browser's flow).
        raise SignInError("the ID token does not belong to this sign-in (nonce mismatch)")
    return identity_from_claims(claims, settings)


_SIGN_IN_REFUSALS = {
    Refusal.UNKNOWN_KEY: "the ID token was signed with a key the provider does not publish",
    Refusal.BAD_SIGNATURE: "the ID token's signature could not be verified",
    Refusal.UNDECODABLE: "the ID token could not be decoded",
    Refusal.EXPIRED: "the ID token has expired; sign in again",
    Refusal.MISSING_CLAIM: "the ID token lacks the {claim} claim",
    Refusal.INVALID_CLAIM: "the ID token is not valid here: {detail}",
    Refusal.INVALID: "the ID token is not valid here: {detail}",
}


def identity_from_claims(claims: dict[str, Any], settings: OidcSettings) -> Identity:
    name = claims.get(settings.principal_claim)
    if not isinstance(name, str) or not name.strip():
        raise SignInError(f"the ID token has no {settings.principal_claim} claim to name you by")
    if is_workload_name(name.strip()):
        raise SignInError(f"names starting with {WORKLOAD_PREFIX} belong to workloads, not people")
    if settings.principal_claim == "email" and claims.get("email_verified") is not True:
        # An unverified address may be anyone's: some providers let users type in any email.
        raise SignInError("the identity provider has not verified your email address")
    if not settings.groups_claim:
        return Identity(name.strip(), None)
    raw = claims.get(settings.groups_claim, [])
    if isinstance(raw, str):
        raw = [g for g in raw.replace(",", " ").split() if g]
    if not isinstance(raw, list):
        raise SignInError(f"the {settings.groups_claim} claim is not a list")
    return Identity(name.strip(), tuple(sorted({str(g) for g in raw if str(g).strip()})))


class OidcClient:
    """One configured OpenID provider: cached discovery document and keys."""

    def __init__(
        self,
        settings: OidcSettings,
        client_secret: str,
        resolve: Callable[[str], Path],
    ) -> None:
        self.settings = settings
        self._secret = client_secret
        self._ssl: ssl.SSLContext | bool = True
        if settings.ca_file:
            self._ssl = ssl.create_default_context(cafile=str(resolve(settings.ca_file)))
        self._session: aiohttp.ClientSession | None = None
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._session

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_TTL:
            url = self.settings.issuer + "/.well-known/openid-configuration"
            document = await self._get_json(url)
            if document.get("issuer", "").rstrip("/") != self.settings.issuer:
                # OpenID Discovery 4.3: a mismatch means the document is not this issuer's.
                raise SignInError("the provider's discovery document names another issuer")
            for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(needed), str):
                    raise SignInError(f"the provider's discovery document has no {needed}")
            self._metadata, self._metadata_at = document, time.monotonic()
        return self._metadata

    async def start(self, redirect_uri: str) -> AuthStart:
        endpoint = (await self.metadata())["authorization_endpoint"]
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        url = authorization_url(endpoint, self.settings, redirect_uri, state, nonce, verifier)
        return AuthStart(url, state, nonce, verifier)

    async def finish(
        self, code: str, redirect_uri: str, verifier: str, nonce: str, now: datetime
    ) -> Identity:
        """Exchange the code (with the PKCE verifier) and verify the ID token that comes back."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": self.settings.client_id,
        }
        headers = {"Accept": "application/json"}
        if self._secret:
            headers["Authorization"] = basic_auth(self.settings.client_id, self._secret)
        try:
            async with self._http().post(
                metadata["token_endpoint"], data=form, headers=headers, ssl=self._ssl
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200 or not isinstance(body, dict):
                    error = body.get("error", resp.status) if isinstance(body, dict) else resp.status
                    raise SignInError(f"the provider refused the sign-in code ({error})")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("oidc_token_request_failed", error=repr(exc)[:300])
            raise SignInError("the identity provider could not be reached") from None
        token = body.get("id_token")
        if not isinstance(token, str):
            raise SignInError("the provider returned no ID token")
        keys = await self.keys()
        try:
            return verify_id_token(token, self.settings, keys, nonce, now)
        except SignInError:
            # Providers rotate keys: one refetch, rate limited, before giving up.
            if time.monotonic() - self._keys_at < MIN_REFETCH_SECONDS:
                raise
            return verify_id_token(token, self.settings, await self.keys(refresh=True), nonce, now)

    async def keys(self, *, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh or time.monotonic() - self._keys_at > DISCOVERY_TTL:
            metadata = await self.metadata()
            document = await self._get_json(metadata["jwks_uri"])
            try:
                self._keys = parse_key_set(json.dumps(document))
            except (ValueError, JoseError):
                raise SignInError("the provider's signing keys (JWKS) are not valid") from None
            self._keys_at = time.monotonic()
        return self._keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http().get(url, ssl=self._ssl, headers={"Accept": "application/json"}) as resp:
                raw = await resp.content.read(MAX_DOCUMENT + 1)
                if resp.status != 200 or len(raw) > MAX_DOCUMENT:
                    raise SignInError(f"the identity provider answered {resp.status} for {url}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("oidc_fetch_failed", url=url, error=repr(exc)[:300])
            raise SignInError("the identity provider could not be reached") from None
        try:
            document = json.loads(raw)
        except ValueError:
            raise SignInError(f"the identity provider sent invalid JSON from {url}") from None
        if not isinstance(document, dict):
            raise SignInError(f"the identity provider sent an unexpected document from {url}")
        return document
