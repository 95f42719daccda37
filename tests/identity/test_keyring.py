"""The in-memory credentials lookup used on every request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.errors import S3Error
from proxy.identity.keyring import KeyRing
from proxy.identity.keys import AccessKey, derive_secret, new_access_key_id
from proxy.identity.principals import Caller, Principal
from proxy.identity.sessions import issue_session

SERVER_KEY = b"r" * 40
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ALICE = Principal("alice", frozenset({"ml"}))
BOB = Principal("bob")


def _key(principal: Principal, *, revoked: bool = False) -> AccessKey:
    return AccessKey(new_access_key_id(), principal.name, NOW, NOW if revoked else None)


def _code(exc: pytest.ExceptionInfo[S3Error]) -> str:
    return exc.value.code


@pytest.fixture
def keys() -> dict[str, AccessKey]:
    return {"alice": _key(ALICE), "bob": _key(BOB), "revoked": _key(ALICE, revoked=True)}


@pytest.fixture
def ring(keys: dict[str, AccessKey]) -> KeyRing:
    return KeyRing.build([(keys["alice"], ALICE), (keys["bob"], BOB), (keys["revoked"], ALICE)], SERVER_KEY)


def test_long_lived_key_resolves_to_its_principal_and_derived_secret(
    ring: KeyRing, keys: dict[str, AccessKey]
) -> None:
    key_id = keys["alice"].access_key_id
    caller, secret = ring.resolve(key_id, None, NOW)
    assert caller == Caller(ALICE, key_id, temporary=False)
    assert secret == derive_secret(SERVER_KEY, key_id)


def test_each_key_gets_its_own_principal(ring: KeyRing, keys: dict[str, AccessKey]) -> None:
    caller, _ = ring.resolve(keys["bob"].access_key_id, None, NOW)
    assert caller.principal == BOB


def test_unknown_key_is_invalid_access_key(ring: KeyRing) -> None:
    with pytest.raises(S3Error) as exc:
        ring.resolve(new_access_key_id(), None, NOW)
    assert _code(exc) == "InvalidAccessKeyId"


def test_revoked_key_is_not_in_the_ring(ring: KeyRing, keys: dict[str, AccessKey]) -> None:
    with pytest.raises(S3Error) as exc:
        ring.resolve(keys["revoked"].access_key_id, None, NOW)
    assert _code(exc) == "InvalidAccessKeyId"
    assert len(ring) == 2


def test_long_lived_key_with_a_session_token_is_invalid_token(
    ring: KeyRing, keys: dict[str, AccessKey]
) -> None:
    token = issue_session(SERVER_KEY, ALICE, now=NOW, ttl=timedelta(hours=1)).session_token
    with pytest.raises(S3Error) as exc:
        ring.resolve(keys["alice"].access_key_id, token, NOW)
    assert _code(exc) == "InvalidToken"


def test_temporary_key_with_its_token_resolves_to_a_temporary_caller(ring: KeyRing) -> None:
    creds = issue_session(SERVER_KEY, BOB, now=NOW, ttl=timedelta(hours=1))
    caller, secret = ring.resolve(creds.access_key_id, creds.session_token, NOW + timedelta(minutes=30))
    assert caller == Caller(BOB, creds.access_key_id, temporary=True)
    assert secret == creds.secret_access_key


def test_temporary_key_needs_no_entry_in_the_ring() -> None:
    empty = KeyRing.build([], SERVER_KEY)
    creds = issue_session(SERVER_KEY, ALICE, now=NOW, ttl=timedelta(hours=1))
    caller, _ = empty.resolve(creds.access_key_id, creds.session_token, NOW)
    assert caller.principal == ALICE


@pytest.mark.parametrize("token", [None, ""])
def test_temporary_key_without_token_is_invalid_access_key(ring: KeyRing, token: str | None) -> None:
    creds = issue_session(SERVER_KEY, BOB, now=NOW, ttl=timedelta(hours=1))
    with pytest.raises(S3Error) as exc:
        ring.resolve(creds.access_key_id, token, NOW)
    assert _code(exc) == "InvalidAccessKeyId"


def test_temporary_key_with_another_sessions_token_is_invalid_token(ring: KeyRing) -> None:
    mine = issue_session(SERVER_KEY, BOB, now=NOW, ttl=timedelta(hours=1))
    theirs = issue_session(SERVER_KEY, ALICE, now=NOW, ttl=timedelta(hours=1))
    with pytest.raises(S3Error) as exc:
        ring.resolve(mine.access_key_id, theirs.session_token, NOW)
    assert _code(exc) == "InvalidToken"


def test_expired_session_is_expired_token(ring: KeyRing) -> None:
    creds = issue_session(SERVER_KEY, BOB, now=NOW, ttl=timedelta(hours=1))
    with pytest.raises(S3Error) as exc:
        ring.resolve(creds.access_key_id, creds.session_token, NOW + timedelta(hours=2))
    assert _code(exc) == "ExpiredToken"


def test_session_sealed_with_another_server_key_is_invalid_token(ring: KeyRing) -> None:
    creds = issue_session(b"x" * 40, BOB, now=NOW, ttl=timedelta(hours=1))
    with pytest.raises(S3Error) as exc:
        ring.resolve(creds.access_key_id, creds.session_token, NOW)
    assert _code(exc) == "InvalidToken"


def test_ring_cannot_be_changed_in_place(ring: KeyRing) -> None:
    with pytest.raises(TypeError):
        ring.entries["GGNEW"] = (Caller(BOB, "GGNEW"), "secret")  # type: ignore[index]


def test_changes_merged_in_add_drop_and_regroup_keys_and_leave_the_old_ring_alone(
    ring: KeyRing, keys: dict[str, AccessKey]
) -> None:
    carol = Principal("carol", frozenset({"security"}))
    new = _key(carol)
    revoked_bob = AccessKey(keys["bob"].access_key_id, "bob", NOW, NOW)
    regrouped = Principal("alice", frozenset({"ml", "research"}))
    cutoffs = {"bob": NOW}
    merged = ring.updated([(new, carol), (revoked_bob, BOB), (keys["alice"], regrouped)], cutoffs)

    caller, secret = merged.resolve(new.access_key_id, None, NOW)
    assert caller == Caller(carol, new.access_key_id)
    assert secret == derive_secret(SERVER_KEY, new.access_key_id)
    with pytest.raises(S3Error):
        merged.resolve(keys["bob"].access_key_id, None, NOW)
    assert merged.resolve(keys["alice"].access_key_id, None, NOW)[0].principal.groups == {"ml", "research"}
    assert dict(merged.sessions_not_before) == cutoffs
    # Requests still reading the old ring see it as it was.
    assert ring.resolve(keys["bob"].access_key_id, None, NOW)[0].principal == BOB
    assert ring.resolve(keys["alice"].access_key_id, None, NOW)[0].principal == ALICE
