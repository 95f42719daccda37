"""Signing in to the web pages, served by aiohttp over a real SQLite store: OpenID Connect against a
small stand-in provider run here (discovery, JWKS, authorize, token), an SSO proxy's identity headers,
the dev sign-in, and CSRF refusals.

The sign-in journey itself runs against a real provider in tests/oidc/test_real_provider.py; the
stand-in stays for what a real provider will not do on request: a wrong nonce, a token signed by a key
it does not publish, another client's token in the gateway's own code exchange, a forged state."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from proxy.access.grants import Action
from proxy.access.policy import Policy, Resource, ResourcePath, Rule
from proxy.config import Settings
from proxy.control.app import control_app
from proxy.live_state import LiveState
from proxy.observe.events import EventBus
from proxy.store.sql import SqlStore
from proxy.workflow.service import Workflow

SERVER_KEY = "k" * 48
CLIENT_ID = "grantgate-web"
CLIENT_SECRET = "s3cret-of-the-client"
POLICY = Policy(
    resources=(Resource("models", (ResourcePath("archive", "models/"),), "Model weights"),),
    rules=(
        Rule(
            resource="models",
            requester_groups=frozenset({"ml"}),
            actions=frozenset({Action.READ, Action.LIST}),
            default_duration=timedelta(hours=2),
            max_duration=timedelta(hours=8),
            approver_groups=frozenset({"security"}),
        ),
    ),
)


# --- a small OpenID provider ------------------------------------------------------------------------


@dataclass
class Provider:
    """Signs everyone in as `user` at once; misbehaves on demand to test the relying party's checks."""

    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    user: dict[str, Any] = field(
        default_factory=lambda: {"sub": "dana", "preferred_username": "Dana", "groups": ["ml", "eng"]}
    )
    issuer: str = ""
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    wrong_nonce: bool = False
    sign_with: RSAKey | None = None  # a key the JWKS does not publish
    audience: str = CLIENT_ID
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        return app

    async def discovery(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.issuer + "/token",
                "jwks_uri": self.issuer + "/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, _request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False, use="sig", alg="RS256")]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
        assert q["code_challenge_method"] == "S256" and "openid" in q["scope"].split()
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "nonce": q["nonce"],
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
        }
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
        return web.Response(status=302, headers={"Location": target})

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        expected_auth = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected_auth:
            return web.json_response({"error": "invalid_client"}, status=401)
        issued = self.codes.pop(str(form.get("code")), None)
        if issued is None or form.get("redirect_uri") != issued["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if digest != issued["challenge"]:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE"}, status=400)
        now = int(time.time())
        claims = {
            **self.user,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + 300,
            "nonce": "someone-elses-nonce" if self.wrong_nonce else issued["nonce"],
        }
        signer = self.sign_with or self.key
        token = jwt.encode({"alg": "RS256", "kid": signer.kid}, claims, signer)
        return web.json_response({"access_token": "at", "token_type": "Bearer", "id_token": token})


# --- the control listener under test ------------------------------------------------------------------------


@dataclass
class Site:
    url: str
    store: SqlStore
    provider: Provider


def settings_for(tmp_path: Path, web_section: dict[str, Any], public_url: str) -> Settings:
    return Settings.model_validate(
        {
            "server": {"secret_key": SERVER_KEY, "public_url": public_url},
            "web": web_section,
            "base_dir": tmp_path,
        }
    )


@pytest.fixture
async def provider() -> AsyncIterator[tuple[Provider, TestServer]]:
    idp = Provider()
    server = TestServer(idp.app(), host="127.0.0.1")
    await server.start_server()
    idp.issuer = str(server.make_url("")).rstrip("/")
    yield idp, server
    await server.close()


async def start_site(
    tmp_path: Path, web_section: dict[str, Any], idp: Provider, clock: Callable[[], datetime] | None = None
) -> tuple[Site, TestServer, Workflow]:
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'gg.db'}", upgrade=True)
    for name, groups in {"alice": ["ml"], "carol": ["security"]}.items():
        await store.ensure_principal(name, groups)
    workflow = Workflow(store, POLICY, EventBus(), **({"clock": clock} if clock else {}))
    state = LiveState(store, SERVER_KEY.encode(), interval=1, grace=1)
    # The public URL must be known before the app is built: reserve the port first.
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    port = server.port
    await server.close()
    settings = settings_for(tmp_path, web_section, f"http://127.0.0.1:{port}")
    site_server = TestServer(control_app(state, workflow, settings=settings), host="127.0.0.1", port=port)
    await site_server.start_server()
    return Site(f"http://127.0.0.1:{port}", store, idp), site_server, workflow


@pytest.fixture
async def oidc_site(tmp_path: Path, provider: tuple[Provider, TestServer]) -> AsyncIterator[Site]:
    idp, _ = provider
    section = {"oidc": {"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}
    site, server, _workflow = await start_site(tmp_path, section, idp)
    yield site
    await server.close()
    await site.store.close()


def browser_session() -> aiohttp.ClientSession:
    # unsafe: keep cookies for an IP-address host, as a browser does.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def follow(
    client: aiohttp.ClientSession, url: str, hops: int = 10
) -> tuple[aiohttp.ClientResponse, str, list[str]]:
    """GET `url`, following redirects by hand; returns the last response, its body and the path taken."""
    seen = []
    for _ in range(hops):
        seen.append(url)
        resp = await client.get(url, allow_redirects=False)
        body = await resp.text()
        if resp.status not in (301, 302, 303):
            return resp, body, seen
        location = resp.headers["Location"]
        url = location if location.startswith("http") else str(resp.url.join(aiohttp.client.URL(location)))
    raise AssertionError(f"too many redirects: {seen}")


async def test_oidc_sign_in_keys_people_on_sub_not_on_a_chosen_username(oidc_site: Site) -> None:
    # A provider account whose self-chosen username is an approver's name does not become the approver.
    oidc_site.provider.user = {"sub": "u-9f2c", "preferred_username": "carol", "groups": ["ml"]}
    async with browser_session() as client:
        resp, body, _ = await follow(client, oidc_site.url + "/inbox")
        assert resp.status == 200, body
        assert "u-9f2c" in body and "carol" not in body
    carol = await oidc_site.store.get_principal("carol")
    assert carol is not None and carol.groups == frozenset({"security"})


async def test_oidc_token_with_wrong_nonce_is_refused(oidc_site: Site) -> None:
    oidc_site.provider.wrong_nonce = True
    async with browser_session() as client:
        resp, body, _ = await follow(client, oidc_site.url + "/access")
    assert resp.status == 400 and "nonce mismatch" in body
    assert await oidc_site.store.get_principal("dana") is None


async def test_oidc_token_signed_by_an_unpublished_key_is_refused(oidc_site: Site) -> None:
    oidc_site.provider.sign_with = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    async with browser_session() as client:
        resp, body, _ = await follow(client, oidc_site.url + "/access")
    assert resp.status == 400 and "signature could not be verified" in body
    assert await oidc_site.store.get_principal("dana") is None


async def test_oidc_token_for_another_client_is_refused(oidc_site: Site) -> None:
    oidc_site.provider.audience = "some-other-app"
    async with browser_session() as client:
        resp, body, _ = await follow(client, oidc_site.url + "/access")
    assert resp.status == 400 and "not valid here" in body


async def test_oidc_callback_with_a_foreign_state_is_refused(oidc_site: Site) -> None:
    async with browser_session() as client:
        # Start a sign-in, then arrive at the callback with a code and state this browser never got.
        start = await client.get(oidc_site.url + "/signin/oidc?next=/access", allow_redirects=False)
        assert start.status == 303
        query = parse_qs(urlsplit(start.headers["Location"]).query)
        assert query["code_challenge_method"] == ["S256"] and query["nonce"][0]
        resp, body, _ = await follow(client, oidc_site.url + "/signin/oidc/callback?code=x&state=forged")
        assert resp.status == 400 and "not started here" in body
        # Nobody is signed in.
        after = await client.get(oidc_site.url + "/access", allow_redirects=False)
        assert after.status == 303 and after.headers["Location"].startswith("/signin")


# --- trusted identity headers ------------------------------------------------------------------------


async def header_site(tmp_path: Path, idp: Provider, proxies: list[str]) -> tuple[Site, TestServer]:
    section = {"trusted_headers": {"enabled": True, "proxies": proxies}}
    site, server, _ = await start_site(tmp_path, section, idp)
    return site, server


async def test_identity_headers_from_an_untrusted_address_are_ignored(tmp_path: Path) -> None:
    site, server = await header_site(tmp_path, Provider(), ["10.20.0.0/16"])
    try:
        async with aiohttp.ClientSession() as client:
            resp = await client.get(
                site.url + "/access",
                headers={"X-Forwarded-User": "carol", "X-Forwarded-Groups": "security"},
                allow_redirects=False,
            )
            assert resp.status == 303 and resp.headers["Location"].startswith("/signin")
            grants = await client.get(
                site.url + "/grants", headers={"X-Forwarded-User": "mallory"}, allow_redirects=False
            )
            assert grants.status == 303
        assert await site.store.get_principal("mallory") is None
    finally:
        await server.close()
        await site.store.close()


async def test_identity_headers_from_the_trusted_proxy_sign_in_and_sync_groups(tmp_path: Path) -> None:
    site, server = await header_site(tmp_path, Provider(), ["127.0.0.1/32"])
    try:
        async with browser_session() as client:
            resp = await client.get(
                site.url + "/inbox",
                headers={"X-Forwarded-User": "erin", "X-Forwarded-Groups": "security, ml"},
                allow_redirects=False,
            )
            assert resp.status == 200
            body = await resp.text()
            assert "erin" in body and "Inbox" in body
            # Behind a proxy, signing out is the proxy's business: no button for it.
            assert "Sign out" not in body
        stored = await site.store.get_principal("erin")
        assert stored is not None and stored.groups == frozenset({"security", "ml"})
    finally:
        await server.close()
        await site.store.close()


async def test_identity_headers_are_ignored_when_not_enabled(tmp_path: Path) -> None:
    site, server, _ = await start_site(tmp_path, {"dev_login": True}, Provider())
    try:
        async with aiohttp.ClientSession() as client:
            resp = await client.get(
                site.url + "/access", headers={"X-Forwarded-User": "carol"}, allow_redirects=False
            )
            assert resp.status == 303 and resp.headers["Location"].startswith("/signin")
    finally:
        await server.close()
        await site.store.close()


# --- dev sign-in, CSRF, cookies ------------------------------------------------------------------------


async def signed_in_as(client: aiohttp.ClientSession, url: str, name: str) -> str:
    """Dev sign-in as `name`; returns the CSRF token of the new session."""
    page = await (await client.get(url + "/signin")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    resp = await client.post(
        url + "/signin/dev", data={"csrf_token": token.group(1), "principal": name, "next": "/access"}
    )
    body = await resp.text()
    assert resp.status == 200 and name in body
    fresh = re.search(r'name="csrf_token" value="([^"]+)"', body)
    assert fresh and fresh.group(1) != token.group(1)  # signing in starts a new session
    return fresh.group(1)


async def test_dev_sign_in_is_refused_unless_enabled(tmp_path: Path) -> None:
    site, server, _ = await start_site(tmp_path, {}, Provider())
    try:
        async with browser_session() as client:
            page = await (await client.get(site.url + "/signin")).text()
            assert "Development sign-in" not in page and "No sign-in method is configured" in page
            token = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert token is None  # the page has no form at all
            resp = await client.post(
                site.url + "/signin/dev", data={"principal": "carol"}, allow_redirects=False
            )
            assert resp.status in (403, 404)
    finally:
        await server.close()
        await site.store.close()


async def test_state_changing_forms_need_the_sessions_csrf_token(tmp_path: Path) -> None:
    site, server, workflow = await start_site(tmp_path, {"dev_login": True}, Provider())
    try:
        async with browser_session() as alice, browser_session() as carol:
            alice_token = await signed_in_as(alice, site.url, "alice")
            await signed_in_as(carol, site.url, "carol")
            form = {
                "resource": "s3://archive/models/",
                "actions": "read",
                "duration": "1h",
                "justification": "needed for the evaluation run",
            }
            missing = await alice.post(site.url + "/request", data=form, allow_redirects=False)
            assert missing.status == 403
            assert await workflow.requests.list_requests() == []
            ok = await alice.post(
                site.url + "/request", data={**form, "csrf_token": alice_token}, allow_redirects=False
            )
            assert ok.status == 303
            (pending,) = await workflow.requests.list_requests()
            # carol's approval with alice's token (another session's) is refused, then hers works.
            forged = await carol.post(
                site.url + f"/requests/{pending.id}/approve",
                data={"csrf_token": alice_token},
                allow_redirects=False,
            )
            assert forged.status == 403
            assert (await workflow.requests.get_request(pending.id)).status.value == "pending"  # type: ignore[union-attr]
    finally:
        await server.close()
        await site.store.close()


async def test_session_cookie_is_httponly_and_lax(tmp_path: Path) -> None:
    site, server, _ = await start_site(tmp_path, {"dev_login": True}, Provider())
    try:
        async with aiohttp.ClientSession() as client:
            resp = await client.get(site.url + "/signin")
            cookie = resp.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    finally:
        await server.close()
        await site.store.close()


# --- sessions end on the server ------------------------------------------------------------------------


def session_cookie(client: aiohttp.ClientSession, url: str) -> str:
    cookie = client.cookie_jar.filter_cookies(aiohttp.client.URL(url)).get("grantgate_session")
    assert cookie is not None
    return cookie.value


async def opens_inbox_with(url: str, cookie: str) -> bool:
    """Whether a browser holding only `cookie` (a copy, say) gets the inbox."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as thief:
        resp = await thief.get(
            url + "/inbox", headers={"Cookie": f"grantgate_session={cookie}"}, allow_redirects=False
        )
        return resp.status == 200


async def test_signing_out_ends_the_session_on_the_server(tmp_path: Path) -> None:
    site, server, _ = await start_site(tmp_path, {"dev_login": True}, Provider())
    try:
        async with browser_session() as carol:
            token = await signed_in_as(carol, site.url, "carol")
            kept = session_cookie(carol, site.url)
            assert await opens_inbox_with(site.url, kept)
            out = await carol.post(site.url + "/signout", data={"csrf_token": token}, allow_redirects=False)
            assert out.status == 303
        # The cookie from before signing out still carries its signature and 8 hours: it opens nothing.
        assert not await opens_inbox_with(site.url, kept)
    finally:
        await server.close()
        await site.store.close()


async def test_revoking_a_persons_key_ends_their_web_sessions(tmp_path: Path) -> None:
    site, server, _ = await start_site(tmp_path, {"dev_login": True}, Provider())
    try:
        key, _secret = await site.store.create_access_key("carol", SERVER_KEY.encode(), now=datetime.now(UTC))
        async with browser_session() as carol:
            await signed_in_as(carol, site.url, "carol")
            kept = session_cookie(carol, site.url)
            assert await opens_inbox_with(site.url, kept)
            assert await site.store.revoke_access_key(key.access_key_id, now=datetime.now(UTC))
            assert not await opens_inbox_with(site.url, kept)
            resp = await carol.get(site.url + "/inbox", allow_redirects=False)
            assert resp.status == 303 and resp.headers["Location"].startswith("/signin")
    finally:
        await server.close()
        await site.store.close()


async def test_an_old_anonymous_csrf_token_does_not_sign_in(tmp_path: Path) -> None:
    moment = [datetime.now(UTC)]
    site, server, _ = await start_site(tmp_path, {"dev_login": True}, Provider(), clock=lambda: moment[0])
    try:
        async with browser_session() as client:

            async def sign_in_form() -> str:
                page = await (await client.get(site.url + "/signin")).text()
                found = re.search(r'name="csrf_token" value="([^"]+)"', page)
                assert found
                return found.group(1)

            async def sign_in(token: str) -> int:
                resp = await client.post(
                    site.url + "/signin/dev",
                    data={"csrf_token": token, "principal": "carol", "next": "/inbox"},
                    allow_redirects=False,
                )
                return resp.status

            # A form shown again hands out a new token: the one from the earlier page no longer works.
            earlier = await sign_in_form()
            await sign_in_form()
            assert await sign_in(earlier) == 403
            # A form left open longer than the sign-in window (a token taken long ago) no longer works.
            stale = await sign_in_form()
            moment[0] += timedelta(minutes=16)
            assert await sign_in(stale) == 403
            assert await sign_in(await sign_in_form()) == 303
    finally:
        await server.close()
        await site.store.close()
