"""Web sign-in against a real, certified OpenID provider (panva/node-oidc-provider, run by node from
tests/oidc/provider.mjs), in Debian's chromium, through a real gateway: the authorization code flow
with PKCE, groups from a claim, signing out, the provider rotating its signing key, and an ID token
issued to another client refused.

tests/control/test_web_signin.py keeps a stand-in provider for what a real one will not do on
request (a wrong nonce, a token signed by an unpublished key, another audience in the code exchange).
`make oidc-provider` installs the npm package (package-lock.json pins it); CI runs it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from support import tools
from support.browser import chromium
from support.observed import eventually
from support.world import World, free_port, run_sync, running_world, wait_http

from proxy.control.oidc import SignInError, pkce_challenge, verify_id_token
from proxy.control.web_settings import OidcSettings
from proxy.identity.jwks import parse_key_set
from proxy.identity.principals import Principal
from proxy.store.sql import SqlStore

HERE = Path(__file__).resolve().parent
CLIENT_ID = "grantgate-web"
CLIENT_SECRET = secrets.token_urlsafe(24)
OTHER_APP = "other-app"
OTHER_REDIRECT = "http://other-app.invalid/callback"
ACCOUNTS = {"dana": ["ml", "eng"], "erin": ["security"]}


@dataclass
class RealProvider:
    issuer: str

    def admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.issuer + path, method="POST", data=json.dumps(body or {}).encode()
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return dict(json.load(resp))

    def jwks_kids(self) -> list[str]:
        with urllib.request.urlopen(self.issuer + "/jwks", timeout=10) as resp:
            return [key["kid"] for key in json.load(resp)["keys"]]


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealProvider]:
    node = tools.require("node", "apt-get install nodejs npm (.ci/run does)")
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        how = "run `make oidc-provider` (npm ci in tests/oidc)"
        if os.environ.get("CI"):
            pytest.fail(f"the oidc-provider npm package is not installed, and CI must have it: {how}")
        pytest.skip(f"the oidc-provider npm package is not installed: {how}")
    port = free_port()
    log = (tmp_path_factory.mktemp("oidc") / "provider.log").open("wb")
    proc = subprocess.Popen(
        [node, str(HERE / "provider.mjs")],
        env={**os.environ, "PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        issuer = f"http://127.0.0.1:{port}"
        wait_http(issuer + "/.well-known/openid-configuration")
        yield RealProvider(issuer)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def world(provider: RealProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # The claims are set explicitly: the test holds whatever the defaults become.
    config = f"""
[web.oidc]
issuer = "{provider.issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
principal_claim = "preferred_username"
groups_claim = "groups"
"""
    with running_world(tmp_path_factory.mktemp("oidc-world"), extra_config=config) as w:
        provider.admin(
            "/__test/setup",
            {
                "clients": [
                    {
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                        "redirect_uris": [w.http.control_url + "/signin/oidc/callback"],
                    },
                    {
                        "client_id": OTHER_APP,
                        "client_secret": "other-secret",
                        "redirect_uris": [OTHER_REDIRECT],
                    },
                ],
                "accounts": ACCOUNTS,
            },
        )
        yield w


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def principal(world: World, name: str) -> Principal | None:
    async def read() -> Principal | None:
        store = await SqlStore.open(world.store_url)
        try:
            return await store.get_principal(name)
        finally:
            await store.close()

    return run_sync(read())


def log_in_at_provider_if_asked(page: Any, provider: RealProvider, login: str) -> None:
    """The provider's own login page (any password), unless its session already knows the browser."""
    page.wait_for_load_state()
    if page.url.startswith(provider.issuer):
        page.fill('input[name="login"]', login)
        page.fill('input[name="password"]', "any password")
        page.click('button[type="submit"]')


def sign_in(page: Any, world: World, provider: RealProvider, login: str, path: str = "/access") -> None:
    page.goto(world.http.control_url + path)
    log_in_at_provider_if_asked(page, provider, login)
    page.wait_for_url(world.http.control_url + "/**")
    page.wait_for_load_state()


# --- the tests --------------------------------------------------------------------------------------


def test_sign_in_with_code_and_pkce_names_the_person_by_the_claim_and_takes_groups(
    page: Any, world: World, provider: RealProvider
) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.startswith(provider.issuer + "/auth") else None)
    sign_in(page, world, provider, "dana", "/request?resource=s3://anything/x&action=read")
    # Back on the page that was asked for, with its query, signed in.
    assert urlsplit(page.url).path == "/request"
    assert parse_qs(urlsplit(page.url).query)["resource"] == ["s3://anything/x"]
    assert "dana" in page.content()
    query = parse_qs(urlsplit(asked[0]).query)
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == [CLIENT_ID] and len(query["code_challenge"][0]) == 43
    dana = principal(world, "dana")
    assert dana is not None and dana.groups == frozenset(ACCOUNTS["dana"])
    assert principal(world, "id-dana") is None  # `sub` did not name anyone


def test_signing_out_ends_the_session_without_signing_straight_back_in(
    page: Any, world: World, provider: RealProvider
) -> None:
    sign_in(page, world, provider, "erin")
    assert "erin" in page.content()
    page.click("text=Sign out")
    page.wait_for_load_state()
    assert "You are signed out" in page.content()
    assert urlsplit(page.url).path == "/signin"
    # Signing in again goes through the provider, whose session still knows the browser: no login form.
    page.click("text=Sign in with")
    page.wait_for_url(world.http.control_url + "/access")
    assert "erin" in page.content()
    erin = principal(world, "erin")
    assert erin is not None and erin.groups == frozenset({"security"})


def test_a_rotated_signing_key_is_fetched_and_trusted(
    page: Any, world: World, provider: RealProvider
) -> None:
    sign_in(page, world, provider, "dana")  # the gateway now holds the provider's current keys
    before = provider.jwks_kids()
    after = provider.admin("/__test/rotate")["kids"]
    assert set(after).isdisjoint(before) and provider.jwks_kids() == after
    fresh = page.context.browser.new_context().new_page()

    def signed_in_again() -> bool:
        sign_in(fresh, world, provider, "dana")
        # Within ten seconds of its last fetch the gateway does not refetch keys (a token naming an
        # unknown key must not make it hammer the provider): until then the sign-in is refused.
        if "does not publish" in fresh.content():
            return False
        return "dana" in fresh.content() and "/signin" not in fresh.url

    started = time.monotonic()
    eventually(signed_in_again, timeout=30, what="a sign-in with the new key")
    assert time.monotonic() - started < 25
    fresh.context.close()


def test_an_id_token_issued_to_another_client_is_refused(
    page: Any, world: World, provider: RealProvider
) -> None:
    """The real provider binds a token to the client that redeems the code, so the gateway's own code
    exchange cannot be made to carry another client's token; what such a token would meet is
    GrantGate's check of it, shown here with a genuine one the provider issued to another client."""
    verifier = secrets.token_urlsafe(48)
    codes: list[str] = []

    def capture(route: Any) -> None:
        codes.extend(parse_qs(urlsplit(route.request.url).query).get("code", []))
        route.fulfill(status=200, body="captured")

    page.route(OTHER_REDIRECT + "*", capture)
    query = {
        "client_id": OTHER_APP,
        "response_type": "code",
        "scope": "openid profile",
        "redirect_uri": OTHER_REDIRECT,
        "state": "s",
        "nonce": "n",
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    page.goto(provider.issuer + "/auth?" + urlencode(query))
    log_in_at_provider_if_asked(page, provider, "dana")
    page.wait_for_url(OTHER_REDIRECT + "**")
    form = {"grant_type": "authorization_code", "code": codes[0], "redirect_uri": OTHER_REDIRECT}
    form["code_verifier"] = verifier
    request = urllib.request.Request(
        provider.issuer + "/token",
        data=urlencode(form).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(f"{OTHER_APP}:other-secret".encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        token = json.load(resp)["id_token"]
    with urllib.request.urlopen(provider.issuer + "/jwks", timeout=10) as resp:
        keys = parse_key_set(resp.read().decode())
    ours = OidcSettings(issuer=provider.issuer, client_id=CLIENT_ID, principal_claim="preferred_username")
    theirs = ours.model_copy(update={"client_id": OTHER_APP})
    now = datetime.now(UTC)
    assert verify_id_token(token, theirs, keys, "n", now).name == "dana"  # genuine, for other-app
    with pytest.raises(SignInError, match="not valid here"):
        verify_id_token(token, ours, keys, "n", now)
