"""Credentials lookup for the request path: access key id (+ session token) -> caller and signing secret.

A KeyRing is an immutable snapshot built from the store's active keys; a refresh builds a new one.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from proxy.errors import S3Error
from proxy.identity.keys import AccessKey, derive_secret, is_temporary_key_id
from proxy.identity.principals import Caller, Principal
from proxy.identity.sessions import derive_session_secret, open_session


@dataclass(frozen=True, slots=True)
class KeyRing:
    entries: Mapping[str, tuple[Caller, str]]
    server_key: bytes
    # Per principal: sessions issued before this time are refused (a grant of theirs was revoked since).
    sessions_not_before: Mapping[str, datetime] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        keys: Iterable[tuple[AccessKey, Principal]],
        server_key: bytes,
        sessions_not_before: Mapping[str, datetime] | None = None,
    ) -> KeyRing:
        return cls(MappingProxyType({}), server_key).updated(keys, sessions_not_before or {})

    def updated(
        self, changed: Iterable[tuple[AccessKey, Principal]], sessions_not_before: Mapping[str, datetime]
    ) -> KeyRing:
        """A new ring with these keys changed (created, revoked, their principal's groups changed); this
        one is left as it was, for the requests still reading it.

        Secrets are derived here, once per key, not per request: an HMAC per request adds up."""
        entries = dict(self.entries)
        for key, principal in changed:
            if key.revoked_at is not None:
                entries.pop(key.access_key_id, None)
            else:
                kept = entries.get(key.access_key_id)
                entries[key.access_key_id] = _entry(key, principal, kept, self.server_key)
        cutoffs = MappingProxyType(dict(sessions_not_before))
        return KeyRing(MappingProxyType(entries), self.server_key, cutoffs)

    def resolve(self, access_key_id: str, session_token: str | None, now: datetime) -> tuple[Caller, str]:
        """The caller and the secret to verify its signature with; raises S3Error when refused.

        A temporary key ("GGT...") sent without a session token gets InvalidAccessKeyId, as S3 answers
        for temporary AWS keys used without their token: alone, such an id exists in no records.
        A long-lived key sent with a session token gets InvalidToken: it is not a session's key.
        """
        if is_temporary_key_id(access_key_id):
            return self._resolve_session(access_key_id, session_token, now)
        entry = self.entries.get(access_key_id)
        if entry is None:
            raise S3Error.invalid_access_key()
        if session_token:
            raise S3Error.invalid_token("A session token was sent with a long-lived access key.")
        return entry

    def _resolve_session(self, access_key_id: str, token: str | None, now: datetime) -> tuple[Caller, str]:
        if not token:
            raise S3Error.invalid_access_key()
        claims = open_session(self.server_key, access_key_id, token, now=now)
        # The key id is the token's associated data, so this holds already; checked again because a
        # mismatch here would let one session's token vouch for another key id.
        if not hmac.compare_digest(claims.access_key_id, access_key_id):
            raise S3Error.invalid_token()
        cutoff = self.sessions_not_before.get(claims.principal.name)
        if cutoff is not None and claims.issued_at < cutoff:
            raise S3Error.invalid_token(
                "The session was issued before access was revoked; obtain new temporary credentials."
            )
        caller = Caller(claims.principal, access_key_id, temporary=True)
        return caller, derive_session_secret(self.server_key, access_key_id)

    def __len__(self) -> int:
        return len(self.entries)


def _entry(
    key: AccessKey, principal: Principal, kept: tuple[Caller, str] | None, server_key: bytes
) -> tuple[Caller, str]:
    if kept is not None and kept[0].principal == principal:
        return kept
    secret = kept[1] if kept is not None else derive_secret(server_key, key.access_key_id)
    return Caller(principal, key.access_key_id), secret
