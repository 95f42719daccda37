"""Temporary credentials: sealed session tokens opened without any lookup."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.identity.keys import derive_secret
from proxy.identity.principals import Principal
from proxy.identity.sessions import TOKEN_PREFIX, derive_session_secret, issue_session, open_session

SERVER_KEY = b"s" * 40
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
ALICE = Principal("alice", frozenset({"ml", "eng"}))


def _issue(ttl: timedelta = timedelta(hours=1), principal: Principal = ALICE):
    return issue_session(SERVER_KEY, principal, now=NOW, ttl=ttl, source="test")


def _code(exc: pytest.ExceptionInfo[S3Error]) -> str:
    return exc.value.code


def test_session_round_trip_carries_principal_groups_times_and_source() -> None:
    creds = _issue()
    claims = open_session(SERVER_KEY, creds.access_key_id, creds.session_token, now=NOW)
    assert claims.principal == ALICE
    assert claims.access_key_id == creds.access_key_id
    assert claims.issued_at == NOW
    assert claims.expires_at == NOW + timedelta(hours=1) == creds.expiration
    assert claims.source == "test"


def test_session_credentials_use_a_temporary_key_id_and_session_secret() -> None:
    creds = _issue()
    assert creds.access_key_id.startswith("GGT")
    assert creds.secret_access_key == derive_session_secret(SERVER_KEY, creds.access_key_id)
    # Not the long-lived derivation: a session secret must not double as some long-lived key's secret.
    assert creds.secret_access_key != derive_secret(SERVER_KEY, creds.access_key_id)
    assert len(creds.secret_access_key) == 40


def test_token_is_prefixed_unpadded_base64url() -> None:
    token = _issue().session_token
    assert token.startswith(TOKEN_PREFIX)
    body = token[len(TOKEN_PREFIX) :]
    assert "=" not in body
    assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_principal_name_is_not_readable_from_the_token() -> None:
    token = _issue(principal=Principal("very-recognisable-name")).session_token
    raw = base64.urlsafe_b64decode(token[len(TOKEN_PREFIX) :] + "==")
    assert b"very-recognisable-name" not in raw


def test_two_sessions_get_different_keys_and_tokens() -> None:
    a, b = _issue(), _issue()
    assert a.access_key_id != b.access_key_id
    assert a.session_token != b.session_token


def test_session_is_valid_until_just_before_expiry() -> None:
    creds = _issue(ttl=timedelta(minutes=5))
    just_before = NOW + timedelta(minutes=5) - timedelta(microseconds=1)
    assert open_session(SERVER_KEY, creds.access_key_id, creds.session_token, now=just_before)


@pytest.mark.parametrize("after", [timedelta(0), timedelta(seconds=1), timedelta(days=30)])
def test_expired_session_is_refused_with_expired_token(after: timedelta) -> None:
    creds = _issue(ttl=timedelta(minutes=5))
    with pytest.raises(S3Error) as exc:
        open_session(SERVER_KEY, creds.access_key_id, creds.session_token, now=creds.expiration + after)
    assert _code(exc) == "ExpiredToken"


def test_token_sent_with_another_key_id_is_invalid() -> None:
    a, b = _issue(), _issue()
    with pytest.raises(S3Error) as exc:
        open_session(SERVER_KEY, b.access_key_id, a.session_token, now=NOW)
    assert _code(exc) == "InvalidToken"


def test_token_sent_with_a_long_lived_key_id_is_invalid() -> None:
    creds = _issue()
    with pytest.raises(S3Error) as exc:
        open_session(SERVER_KEY, "GG" + creds.access_key_id[3:] + "A", creds.session_token, now=NOW)
    assert _code(exc) == "InvalidToken"


def test_token_from_another_server_key_is_invalid() -> None:
    creds = issue_session(b"o" * 40, ALICE, now=NOW, ttl=timedelta(hours=1))
    with pytest.raises(S3Error) as exc:
        open_session(SERVER_KEY, creds.access_key_id, creds.session_token, now=NOW)
    assert _code(exc) == "InvalidToken"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ggs1.",
        "ggs1.!!!!",
        "ggs2.AAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "ggs1." + "A" * 16,
        "ggs1." + "A" * 5000,
    ],
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(S3Error) as exc:
        open_session(SERVER_KEY, "GGTAAAAAAAAAAAAAAAAA", token, now=NOW)
    assert _code(exc) == "InvalidToken"


@given(position=st.integers(min_value=0), replacement=st.sampled_from("Aa0_-Zz9"))
def test_any_changed_character_makes_the_token_invalid(position: int, replacement: str) -> None:
    creds = _issue()
    token = creds.session_token
    index = len(TOKEN_PREFIX) + position % (len(token) - len(TOKEN_PREFIX))
    if token[index] == replacement:
        replacement = "B"
    tampered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(S3Error) as exc:
        open_session(SERVER_KEY, creds.access_key_id, tampered, now=NOW)
    assert _code(exc) == "InvalidToken"


def test_truncated_or_extended_token_is_invalid() -> None:
    creds = _issue()
    for tampered in (creds.session_token[:-1], creds.session_token + "A", creds.session_token[:-12]):
        with pytest.raises(S3Error) as exc:
            open_session(SERVER_KEY, creds.access_key_id, tampered, now=NOW)
        assert _code(exc) == "InvalidToken"


def test_session_lifetime_must_be_at_least_a_second() -> None:
    with pytest.raises(ValueError, match="at least one second"):
        _issue(ttl=timedelta(milliseconds=500))


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        issue_session(SERVER_KEY, ALICE, now=datetime(2025, 1, 1), ttl=timedelta(hours=1))
