"""Web identity token verification: signature, issuer, audience, expiry, with `now` passed in."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from proxy.identity.jwks import parse_key_set
from proxy.identity.trust import IssuerSettings
from proxy.identity.webidentity import IdentityError, UnknownKeyId, unverified_issuer, verify_token

ISSUER = "https://kubernetes.default.svc.cluster.local"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
SETTINGS = IssuerSettings(issuer=ISSUER, audiences=["grantgate"], jwks_file="jwks.json", leeway_seconds=30)


def key_set(*keys: RSAKey | ECKey) -> KeySet:
    return parse_key_set(json.dumps({"keys": [k.as_dict(private=False) for k in keys]}))


KEYS = key_set(RSA, EC)


def token(key: Any = RSA, alg: str = "RS256", **overrides: Any) -> str:
    now = int(NOW.timestamp())
    claims = {"iss": ISSUER, "sub": "system:serviceaccount:ml:trainer", "aud": ["grantgate"], "iat": now}
    claims |= {"nbf": now, "exp": now + 600}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


def refused(text: str, *, now: datetime = NOW, keys: KeySet = KEYS) -> IdentityError:
    with pytest.raises(IdentityError) as exc:
        verify_token(text, SETTINGS, keys, now)
    return exc.value


def test_valid_rsa_and_ec_tokens_verify() -> None:
    identity = verify_token(token(), SETTINGS, KEYS, NOW)
    assert identity.subject == "system:serviceaccount:ml:trainer"
    assert identity.audience == "grantgate"
    assert identity.expires_at == NOW + timedelta(seconds=600)
    assert verify_token(token(EC, "ES256"), SETTINGS, KEYS, NOW).issuer == ISSUER


def test_wrong_audience_is_refused() -> None:
    err = refused(token(aud="https://kubernetes.default.svc"))
    assert (err.code, err.message) == ("InvalidIdentityToken", "Incorrect token audience.")


def test_expiry_is_checked_against_the_given_time_with_leeway() -> None:
    assert verify_token(token(), SETTINGS, KEYS, NOW + timedelta(seconds=620)).subject
    assert refused(token(), now=NOW + timedelta(seconds=640)).code == "ExpiredTokenException"


def test_token_not_yet_valid_is_refused() -> None:
    assert refused(token(), now=NOW - timedelta(minutes=5)).code == "InvalidIdentityToken"


def test_issuer_claim_must_be_the_configured_one() -> None:
    assert refused(token(iss="https://other")).message == "Incorrect token issuer."


def test_missing_subject_or_expiry_is_refused() -> None:
    assert "sub" in refused(token(sub=None)).message
    assert "exp" in refused(token(exp=None)).message


def test_signature_by_a_key_posing_under_a_known_kid_is_refused() -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    assert refused(token(forger)).code == "InvalidIdentityToken"


def test_payload_changed_after_signing_is_refused() -> None:
    header, _payload, signature = token().split(".")
    forged = base64.urlsafe_b64encode(
        json.dumps(
            {"iss": ISSUER, "sub": "system:serviceaccount:kube-system:admin", "aud": "grantgate"}
        ).encode()
    )
    assert refused(f"{header}.{forged.decode().rstrip('=')}.{signature}").code == "InvalidIdentityToken"


def test_unknown_kid_is_reported_so_keys_can_be_refetched() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    assert isinstance(refused(token(other)), UnknownKeyId)


def test_hmac_and_none_algorithms_are_refused() -> None:
    secret = OctKey.generate_key(256, parameters={"kid": "rsa-1"})
    assert refused(token(secret, "HS256")).code == "InvalidIdentityToken"
    header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"rsa-1"}').decode().rstrip("=")
    body = token().split(".")[1]
    assert refused(f"{header}.{body}.").code == "InvalidIdentityToken"


def test_private_members_of_a_jwks_are_dropped() -> None:
    keys = parse_key_set(json.dumps({"keys": [RSA.as_dict(private=True)]}))
    assert not keys.keys[0].is_private


def test_unverified_issuer_reads_iss_and_refuses_garbage() -> None:
    assert unverified_issuer(token()) == ISSUER
    for bad in ("", "a.b", "x.!!!.y", "a" * 20001, token().split(".")[0] + ".e30.sig"):
        with pytest.raises(IdentityError):
            unverified_issuer(bad)
