"""The upstream side: re-sign a request with the gateway's own credentials and stream it to the bucket.

The caller's credentials never travel further than the listener; what goes upstream is signed with
credentials resolved the way every AWS tool resolves them (botocore's chain, via aiobotocore).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.session import get_session
from yarl import URL

from proxy.config import UpstreamSettings
from proxy.s3 import sigv4
from proxy.s3.addressing import object_path


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class CredentialSource:
    """Static credentials from config, or botocore's provider chain with its automatic refresh."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._static: Credentials | None = None
        self._chain = None
        if settings.access_key_id and settings.secret_access_key:
            self._static = Credentials(
                settings.access_key_id, settings.secret_access_key, settings.session_token or None
            )

    async def current(self) -> Credentials:
        if self._static is not None:
            return self._static
        if self._chain is None:
            session = get_session()
            if self._settings.profile:
                session.set_config_variable("profile", self._settings.profile)
            self._chain = await session.get_credentials()
            if self._chain is None:
                raise RuntimeError("no upstream credentials found (config, environment, profile or role)")
        frozen = await self._chain.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    bucket: str | None
    key: str | None
    query: Sequence[tuple[str, str]]
    headers: dict[str, str]  # already filtered: what the bucket should see, minus auth
    body: AsyncIterable[bytes] | bytes | None
    payload_hash: str


class Upstream:
    """Builds the upstream URL, signs, and sends. One long-lived aiohttp session per process."""

    def __init__(self, settings: UpstreamSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.credentials = CredentialSource(settings)
        endpoint = settings.endpoint_url or f"https://s3.{settings.region}.amazonaws.com"
        parts = urlsplit(endpoint)
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._base_path = parts.path.rstrip("/")

    def target(self, bucket: str | None, key: str | None) -> tuple[str, str]:
        """(host, path) for a bucket/key under the configured addressing style."""
        if bucket is None:
            return self._netloc, self._base_path + "/"
        if self.settings.addressing == "virtual":
            path = object_path(bucket, key or "")[len(bucket) + 1 :]
            return f"{bucket}.{self._netloc}", self._base_path + path
        path = object_path(bucket, key) if key is not None else object_path(bucket, "").rstrip("/")
        return self._netloc, self._base_path + path

    async def send(self, req: UpstreamRequest) -> aiohttp.ClientResponse:
        creds = await self.credentials.current()
        host, path = self.target(req.bucket, req.key)
        query = [(k, v) for k, v in req.query if k not in sigv4.PRESIGN_PARAMS]
        headers = {**req.headers, "host": host}
        headers.update(
            sigv4.sign(
                req.method,
                path,
                query,
                headers,
                req.payload_hash,
                access_key_id=creds.access_key_id,
                secret=creds.secret_access_key,
                session_token=creds.session_token,
                region=self.settings.region,
                now=datetime.now(UTC),
            )
        )
        qs = sigv4.canonical_query(query)
        # encoded=True: the path and query are sent exactly as signed; yarl must not re-quote them.
        url = URL(f"{self._scheme}://{host}{path}{'?' + qs if qs else ''}", encoded=True)
        return await self.session.request(
            req.method,
            url,
            headers=headers,
            data=req.body,
            allow_redirects=False,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "Content-Type", "User-Agent"),
        )


def new_session(settings: UpstreamSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        ssl=None if settings.verify_tls else False,
        enable_cleanup_closed=True,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,  # a 50 GB object may take an hour; a stalled socket is caught by sock_read
        # aiohttp's `connect` also counts the wait for a free pooled connection: with max_connections
        # long downloads in flight every other request would fail after it. Time the TCP connect only;
        # waiting for a slot is back-pressure, bounded by the client's own patience.
        connect=None,
        sock_connect=settings.connect_timeout_seconds,
        sock_read=settings.read_timeout_seconds,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        read_bufsize=1024 * 1024,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
    )
