"""The upstream side: re-sign a request with the gateway's own credentials and stream it to the bucket.

The caller's credentials never travel further than the listener; what goes upstream is signed with
credentials resolved the way every AWS tool resolves them (botocore's chain, via aiobotocore).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiobotocore.session import get_session

from proxy.config import UpstreamSettings
from proxy.s3 import sigv4
from proxy.s3.addressing import object_path
from proxy.s3.httpclient import Body, Pool, UpstreamResponse, request_head


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
    body: Body
    payload_hash: str


class Upstream:
    """Builds the upstream URL, signs, and sends. One connection pool per process."""

    def __init__(self, settings: UpstreamSettings, pool: Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.credentials = CredentialSource(settings)
        endpoint = settings.endpoint_url or f"https://s3.{settings.region}.amazonaws.com"
        parts = urlsplit(endpoint)
        self._tls = parts.scheme == "https"
        self._netloc = parts.netloc
        self._hostname = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
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

    async def send(self, req: UpstreamRequest) -> UpstreamResponse:
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
        # The path and query go out exactly as signed: nothing re-quotes them on the way.
        head = request_head(req.method, f"{path}?{qs}" if qs else path, headers)
        # `host` is the endpoint's netloc, after "bucket." when addressed virtually.
        connect_host = host[: len(host) - len(self._netloc)] + self._hostname
        return await self.pool.request(connect_host, self._port, self._tls, head, req.body)


def new_pool(settings: UpstreamSettings) -> Pool:
    context = None
    if not settings.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return Pool(
        limit=settings.max_connections,
        # Only the TCP (and TLS) connect is timed: waiting for a free slot while max_connections
        # long downloads are in flight is back-pressure, bounded by the client's own patience.
        connect_timeout=settings.connect_timeout_seconds,
        # No total timeout: a 50 GB object may take an hour. A socket silent this long ends it.
        read_timeout=settings.read_timeout_seconds,
        ssl_context=context,
    )
