"""Sessions die with their principal's access: the key ring refuses tokens issued before the cut-off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.errors import S3Error
from proxy.identity.keyring import KeyRing
from proxy.identity.principals import Principal
from proxy.identity.sessions import issue_session

SERVER_KEY = b"k" * 48
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TRAINER = Principal("system:serviceaccount:ml:trainer")


def ring(cutoffs: dict[str, datetime]) -> KeyRing:
    return KeyRing.build([], SERVER_KEY, cutoffs)


def test_session_issued_before_the_cut_off_is_refused() -> None:
    creds = issue_session(SERVER_KEY, TRAINER, now=NOW, ttl=timedelta(hours=1))
    keys = ring({TRAINER.name: NOW + timedelta(minutes=5)})
    with pytest.raises(S3Error) as exc:
        keys.resolve(creds.access_key_id, creds.session_token, NOW + timedelta(minutes=6))
    assert exc.value.code == "InvalidToken"


def test_session_issued_after_the_cut_off_is_accepted() -> None:
    creds = issue_session(SERVER_KEY, TRAINER, now=NOW + timedelta(minutes=10), ttl=timedelta(hours=1))
    keys = ring({TRAINER.name: NOW + timedelta(minutes=5)})
    caller, secret = keys.resolve(creds.access_key_id, creds.session_token, NOW + timedelta(minutes=11))
    assert caller.principal == TRAINER
    assert secret == creds.secret_access_key


def test_session_in_the_same_second_as_the_cut_off_but_before_it_is_refused() -> None:
    # Tokens carry whole seconds: a session from 12:00:00.2 must not survive a cut-off at 12:00:00.5.
    creds = issue_session(SERVER_KEY, TRAINER, now=NOW + timedelta(milliseconds=200), ttl=timedelta(hours=1))
    keys = ring({TRAINER.name: NOW + timedelta(milliseconds=500)})
    with pytest.raises(S3Error):
        keys.resolve(creds.access_key_id, creds.session_token, NOW + timedelta(seconds=1))


def test_cut_off_of_one_principal_leaves_the_others_alone() -> None:
    other = Principal("system:serviceaccount:ml:eval")
    creds = issue_session(SERVER_KEY, other, now=NOW, ttl=timedelta(hours=1))
    keys = ring({TRAINER.name: NOW + timedelta(minutes=5)})
    assert (
        keys.resolve(creds.access_key_id, creds.session_token, NOW + timedelta(minutes=6))[0].principal
        == other
    )
