"""Issuers' signing keys (JWKS) from a URL or a file, cached, refetched when old or when a new key appears.

I/O at the edge of the STS flow: verification itself (webidentity.py) only ever sees a KeySet.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from proxy.identity.trust import IssuerSettings
from proxy.identity.webidentity import IdentityError

log = structlog.get_logger("grantgate.jwks")

MAX_JWKS_BYTES = 1024 * 1024
# A token naming an unknown `kid` may refetch the keys, but not more often than this: otherwise anyone
# could make the gateway hammer the issuer with made-up key ids.
MIN_REFETCH_SECONDS = 10.0
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)


def _communication_error(issuer: str) -> IdentityError:
    return IdentityError(
        "IDPCommunicationError", f"The signing keys of issuer {issuer} could not be retrieved.", 400
    )


def parse_key_set(raw: bytes | str) -> KeySet:
    """A JWKS document -> KeySet; private members, if any, are dropped: only public keys verify."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    public = []
    for key in data["keys"]:
        if not isinstance(key, dict) or key.get("use", "sig") != "sig":
            continue
        public.append({k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "k")})
    return KeySet.import_key_set({"keys": public})


class JwksSource:
    """The current key set of one issuer. Safe for concurrent callers: one fetch at a time."""

    def __init__(
        self,
        settings: IssuerSettings,
        resolve: Callable[[str], Path],
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.settings = settings
        self._resolve = resolve
        self._session = session
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = 0.0
        self._file_mtime: float | None = None
        self._lock = asyncio.Lock()
        self._ssl: ssl.SSLContext | None = None
        if settings.jwks_ca_file:
            self._ssl = ssl.create_default_context(cafile=str(resolve(settings.jwks_ca_file)))

    async def key_set(self, *, kid: str | None = None, refresh: bool = False) -> KeySet:
        """The keys to verify with; `refresh` asks for a refetch (rate limited) after an unknown kid."""
        async with self._lock:
            if self._needs_load(kid, refresh):
                await self._load()
            if self._keys is None:
                raise _communication_error(self.settings.issuer)
            return self._keys

    def knows(self, kid: str | None) -> bool:
        return kid is None or kid in self._kids

    def _needs_load(self, kid: str | None, refresh: bool) -> bool:
        age = time.monotonic() - self._fetched_at
        if self._keys is None:
            # Never loaded: try now, but an issuer that is down is not retried on every request.
            return self._fetched_at == 0.0 or age > MIN_REFETCH_SECONDS
        if self.settings.jwks_file:
            # Re-reading a file is cheap: follow every change (a mounted ConfigMap updates in place).
            return self._file_changed() or age > self.settings.jwks_refresh_seconds
        if age > self.settings.jwks_refresh_seconds:
            return True
        return (refresh or not self.knows(kid)) and age > MIN_REFETCH_SECONDS

    def _file_changed(self) -> bool:
        try:
            mtime = self._resolve(self.settings.jwks_file).stat().st_mtime
        except OSError:
            return True
        return mtime != self._file_mtime

    async def _load(self) -> None:
        try:
            raw = self._read_file() if self.settings.jwks_file else await self._fetch()
            keys = parse_key_set(raw)
        except (TimeoutError, OSError, ValueError, JoseError, aiohttp.ClientError) as exc:
            # Keep serving with the keys we had: an issuer's brief outage must not stop every pod.
            log.warning("jwks_load_failed", issuer=self.settings.issuer, error=repr(exc)[:300])
            self._fetched_at = time.monotonic()
            return
        self._keys = keys
        self._kids = frozenset(k.kid for k in keys.keys if k.kid)
        self._fetched_at = time.monotonic()
        log.info("jwks_loaded", issuer=self.settings.issuer, keys=len(keys.keys))

    def _read_file(self) -> bytes:
        path = self._resolve(self.settings.jwks_file)
        self._file_mtime = path.stat().st_mtime
        data = path.read_bytes()
        if len(data) > MAX_JWKS_BYTES:
            raise ValueError("JWKS file too large")
        return data

    async def _fetch(self) -> bytes:
        headers: dict[str, Any] = {"Accept": "application/json"}
        if self.settings.jwks_token_file:
            # Re-read on every fetch: the projected token is rotated by the kubelet.
            token = self._resolve(self.settings.jwks_token_file).read_text().strip()
            headers["Authorization"] = f"Bearer {token}"
        async with self._session().get(
            self.settings.jwks_url, headers=headers, ssl=self._ssl or True, timeout=FETCH_TIMEOUT
        ) as resp:
            if resp.status != 200:
                raise ValueError(f"JWKS endpoint answered {resp.status}")
            body = await resp.content.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            return body
