"""The pure parts of the web pages: session cookies, CSRF tokens, readable times, where a 403 link
points in the policy, what the request form offers, identity headers and ID token checks."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from proxy.access.grants import Action
from proxy.access.policy import Policy, Resource, ResourcePath, Rule
from proxy.control import csrf, humanize
from proxy.control.oidc import SignInError, authorization_url, verify_id_token
from proxy.control.web import locate, request_form
from proxy.control.web_settings import OidcSettings, TrustedHeaderSettings
from proxy.control.webcore import header_identity
from proxy.control.websession import Session, decode, encode, session_key
from proxy.identity.principals import Principal

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = session_key(b"x" * 48)
MODELS = Resource("models", (ResourcePath("archive", "models/"),), "Model weights")
POLICY = Policy(
    resources=(MODELS, Resource("data", (ResourcePath("archive", "data/"),))),
    rules=(
        Rule(
            "models",
            frozenset({"ml"}),
            frozenset({Action.READ, Action.LIST}),
            timedelta(hours=2),
            timedelta(hours=8),
            approver_groups=frozenset({"security"}),
        ),
        Rule(
            "models",
            frozenset({"ml"}),
            frozenset({Action.READ, Action.WRITE}),
            timedelta(hours=1),
            timedelta(hours=12),
            approver_groups=frozenset({"security"}),
            approvals_required=2,
        ),
        Rule("data", frozenset({"infra"}), frozenset({Action.READ}), instant_groups=frozenset({"infra"})),
    ),
)


# --- session cookies ------------------------------------------------------------------------


def test_session_round_trips_through_its_cookie() -> None:
    session = Session.fresh(NOW, timedelta(hours=1)).signed_in("alice", "dev", NOW, timedelta(hours=1))
    session = session.flash("success", "done")
    assert decode(encode(session, KEY), KEY, NOW) == session


def test_tampered_session_cookie_is_ignored() -> None:
    cookie = encode(
        Session.fresh(NOW, timedelta(hours=1)).signed_in("alice", "dev", NOW, timedelta(hours=1)), KEY
    )
    body, _, sig = cookie.rpartition(".")
    forged_body = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).replace(b'"alice"', b'"carol"')
        )
        .rstrip(b"=")
        .decode()
    )
    assert decode(f"{forged_body}.{sig}", KEY, NOW) is None
    assert decode(cookie, session_key(b"y" * 48), NOW) is None  # another server key


def test_expired_session_cookie_is_ignored() -> None:
    cookie = encode(Session.fresh(NOW, timedelta(minutes=5)), KEY)
    assert decode(cookie, KEY, NOW + timedelta(minutes=4)) is not None
    assert decode(cookie, KEY, NOW + timedelta(minutes=5)) is None


def test_signing_in_replaces_the_csrf_token() -> None:
    before = Session.fresh(NOW, timedelta(hours=1))
    after = before.signed_in("alice", "dev", NOW, timedelta(hours=1))
    assert after.csrf != before.csrf and after.user == "alice"


@pytest.mark.parametrize("cookie", ["", "garbage", "a.b.c", "." * 5000])
def test_malformed_session_cookie_is_ignored(cookie: str) -> None:
    assert decode(cookie, KEY, NOW) is None


# --- csrf, redirects, times ------------------------------------------------------------------------


def test_csrf_token_must_match_exactly() -> None:
    assert csrf.token_matches("abc", "abc")
    assert not csrf.token_matches("abc", "abd")
    assert not csrf.token_matches("abc", None)
    assert not csrf.token_matches("", "")
    assert csrf.needs_check("POST") and csrf.needs_check("delete") and not csrf.needs_check("GET")


def test_times_read_like_a_person_would_say_them() -> None:
    assert humanize.until(NOW + timedelta(hours=1, minutes=20, seconds=5), NOW) == "in 1h 20m"
    assert humanize.until(NOW + timedelta(seconds=45), NOW) == "in 45s"
    assert humanize.until(NOW + timedelta(days=3, hours=4, minutes=5), NOW) == "in 3d 4h"
    assert humanize.until(NOW - timedelta(seconds=1), NOW) == "now"
    assert humanize.until(None, NOW) == "no expiry"
    assert humanize.ago(NOW - timedelta(minutes=3, seconds=10), NOW) == "3m 10s ago"
    assert humanize.ago(NOW - timedelta(seconds=2), NOW) == "just now"
    assert humanize.ago(NOW + timedelta(hours=2), NOW) == "in 2h"  # a scheduled or extended start


# --- the request form ------------------------------------------------------------------------


def test_denied_object_is_located_in_the_policy_area_that_contains_it() -> None:
    found = locate(POLICY, "s3://archive/models/llama/weights.gguf")
    assert found.resource == MODELS and str(found.path) == "s3://archive/models/"
    assert locate(POLICY, "models").resource == MODELS
    assert "no resource" in locate(POLICY, "s3://archive/other/x").problem
    assert "no resource named" in locate(POLICY, "nothing").problem


def test_form_offers_durations_up_to_the_longest_admitting_maximum() -> None:
    alice = Principal("alice", frozenset({"ml"}))
    rules = POLICY.rules_for("models")
    form = request_form(MODELS, MODELS.paths[0], rules, alice)
    assert max(form.durations) == timedelta(hours=12)
    assert all(d <= timedelta(hours=12) for d in form.durations)
    assert form.default_duration == timedelta(hours=2)  # the first admitting rule's
    assert form.actions == (Action.READ, Action.LIST, Action.WRITE)
    assert not form.instant and form.approver_groups == ("security",)


def test_form_says_when_access_is_instant() -> None:
    bob = Principal("bob", frozenset({"infra"}))
    data = POLICY.resource("data")
    assert data is not None
    form = request_form(data, data.paths[0], POLICY.rules_for("data"), bob)
    assert form.instant and max(form.durations) == timedelta(hours=8)


# --- identity headers ------------------------------------------------------------------------


HEADERS = TrustedHeaderSettings(enabled=True, proxies=["10.1.0.0/16", "::1"])


def test_identity_headers_are_believed_only_from_listed_proxies() -> None:
    sent = {"X-Forwarded-User": "carol", "X-Forwarded-Groups": "security, ml,"}
    assert header_identity(sent, "10.1.2.3", HEADERS) == ("carol", ("ml", "security"))
    assert header_identity(sent, "::1", HEADERS) == ("carol", ("ml", "security"))
    assert header_identity(sent, "10.2.0.1", HEADERS) is None
    assert header_identity(sent, None, HEADERS) is None
    assert header_identity(sent, "10.1.2.3", TrustedHeaderSettings()) is None  # off by default


def test_identity_headers_need_proxies_when_enabled() -> None:
    with pytest.raises(ValueError, match="proxies"):
        TrustedHeaderSettings(enabled=True)
    with pytest.raises(ValueError, match="CIDR"):
        TrustedHeaderSettings(enabled=True, proxies=["not-a-network"])


# --- ID tokens ------------------------------------------------------------------------

ISSUER = "https://idp.example"
OIDC = OidcSettings(issuer=ISSUER, client_id="gg")
SIGNER = RSAKey.generate_key(2048, parameters={"kid": "one"})
KEYS = KeySet.import_key_set({"keys": [SIGNER.as_dict(private=False)]})


def id_token(**overrides: object) -> str:
    now = int(NOW.timestamp())
    claims = {
        "iss": ISSUER,
        "aud": "gg",
        "sub": "u-1",
        "iat": now,
        "exp": now + 300,
        "nonce": "n1",
        "preferred_username": "dana",
        "groups": ["ml"],
        **overrides,
    }
    return jwt.encode({"alg": "RS256", "kid": "one"}, claims, SIGNER)


def test_valid_id_token_names_the_principal_by_its_subject_and_groups() -> None:
    # Not by preferred_username, which the provider may let anyone choose or reuse (here: "carol").
    identity = verify_id_token(id_token(preferred_username="carol"), OIDC, KEYS, "n1", NOW)
    assert (identity.name, identity.groups) == ("u-1", ("ml",))


def test_a_person_never_signs_in_under_a_workload_principals_name() -> None:
    with pytest.raises(SignInError, match="belong to workloads"):
        verify_id_token(id_token(sub="wl:system:serviceaccount:ml:trainer"), OIDC, KEYS, "n1", NOW)


def test_another_principal_claim_names_the_principal_when_configured() -> None:
    settings = OIDC.model_copy(update={"principal_claim": "preferred_username"})
    assert verify_id_token(id_token(), settings, KEYS, "n1", NOW).name == "dana"
    with pytest.raises(SignInError, match="no preferred_username claim"):
        verify_id_token(id_token(preferred_username=None), settings, KEYS, "n1", NOW)


@pytest.mark.parametrize("verified", [False, None, "true"])
def test_an_email_names_the_principal_only_once_verified(verified: object) -> None:
    settings = OIDC.model_copy(update={"principal_claim": "email"})
    token = id_token(email="dana@example.com", email_verified=verified)
    with pytest.raises(SignInError, match="not verified your email"):
        verify_id_token(token, settings, KEYS, "n1", NOW)
    good = id_token(email="dana@example.com", email_verified=True)
    assert verify_id_token(good, settings, KEYS, "n1", NOW).name == "dana@example.com"


@pytest.mark.parametrize(
    ("overrides", "nonce", "message"),
    [
        ({}, "other", "nonce mismatch"),
        ({"iss": "https://evil.example"}, "n1", "not valid here"),
        ({"aud": "someone-else"}, "n1", "not valid here"),
        ({"exp": int(NOW.timestamp()) - 120}, "n1", "expired"),
        ({"aud": ["gg", "other"]}, "n1", "azp"),
    ],
)
def test_id_token_checks(overrides: dict[str, object], nonce: str, message: str) -> None:
    with pytest.raises(SignInError, match=message):
        verify_id_token(id_token(**overrides), OIDC, KEYS, nonce, NOW)


def test_authorization_request_carries_a_s256_pkce_challenge() -> None:
    url = authorization_url(ISSUER + "/auth", OIDC, "https://gg/cb", "st", "no", "v" * 50)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    expected = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 50).digest()).rstrip(b"=").decode()
    assert query["code_challenge"] == expected and query["code_challenge_method"] == "S256"
    assert (query["state"], query["nonce"], query["response_type"]) == ("st", "no", "code")


def test_clock_is_only_read_by_the_caller() -> None:
    # verify_id_token judges expiry by the `now` it is given, not the wall clock.
    later = NOW + timedelta(days=365 * 10)
    with pytest.raises(SignInError, match="expired"):
        verify_id_token(id_token(), OIDC, KEYS, "n1", later)
