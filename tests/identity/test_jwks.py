"""Issuer keys from a file or a URL: reloaded on change, refetched for a new kid, kept through outages."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from joserfc.jwk import RSAKey

from proxy.identity import jwks
from proxy.identity.jwks import JwksSource
from proxy.identity.trust import IssuerSettings
from proxy.identity.webidentity import IdentityError


def document(*keys: RSAKey) -> str:
    return json.dumps({"keys": [k.as_dict(private=False) for k in keys]})


def kids(key_set: object) -> set[str]:
    return {k.kid for k in key_set.keys}  # type: ignore[attr-defined]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_jwks_file_is_reread_when_it_changes(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    first, second = (RSAKey.generate_key(2048, parameters={"kid": k}) for k in ("one", "two"))
    path = tmp_path / "jwks.json"
    path.write_text(document(first))
    settings = IssuerSettings(issuer="https://i", audiences=["a"], jwks_file=str(path))
    source = JwksSource(settings, Path, lambda: http)
    assert kids(await source.key_set()) == {"one"}
    path.write_text(document(first, second))
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert kids(await source.key_set()) == {"one", "two"}


async def test_unknown_kid_refetches_the_url_but_not_more_than_the_rate_limit(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [RSAKey.generate_key(2048, parameters={"kid": "one"})]
    fetches = 0

    async def serve(_request: web.Request) -> web.Response:
        nonlocal fetches
        fetches += 1
        return web.Response(text=document(*keys), content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        url = f"http://127.0.0.1:{port}/jwks"
        source = JwksSource(
            IssuerSettings(issuer="https://i", audiences=["a"], jwks_url=url), Path, lambda: http
        )
        assert kids(await source.key_set()) == {"one"}
        keys.append(RSAKey.generate_key(2048, parameters={"kid": "two"}))
        # Within the rate limit, a made-up kid does not make the gateway fetch again.
        await source.key_set(refresh=True)
        assert fetches == 1
        monkeypatch.setattr(jwks, "MIN_REFETCH_SECONDS", 0.0)
        assert kids(await source.key_set(kid="two")) == {"one", "two"}
        assert fetches == 2
    finally:
        await runner.cleanup()


async def test_unreachable_issuer_is_an_idp_communication_error(http: aiohttp.ClientSession) -> None:
    settings = IssuerSettings(issuer="https://i", audiences=["a"], jwks_url="http://127.0.0.1:9/jwks")
    source = JwksSource(settings, Path, lambda: http)
    with pytest.raises(IdentityError) as exc:
        await source.key_set()
    assert exc.value.code == "IDPCommunicationError"
