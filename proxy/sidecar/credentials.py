"""The sidecar's temporary credentials: the pod's projected token exchanged at the gateway's STS, refreshed.

The token file is re-read on every exchange, since the kubelet rotates projected tokens in place.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import structlog
from defusedxml import ElementTree

from proxy.s3.upstream import Credentials

log = structlog.get_logger("grantgate.sidecar")

_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
# Refresh when this share of a session's life is left, and never later than this before it ends.
_REFRESH_SHARE = 0.2
_REFRESH_MARGIN = timedelta(seconds=60)
_MAX_RESPONSE = 64 * 1024


class StsRefused(Exception):
    """The gateway's STS refused the exchange (or could not be reached): code and message as it said."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Session:
    credentials: Credentials
    expiration: datetime
    refresh_at: datetime


def parse_sts_response(status: int, body: bytes) -> tuple[Credentials, datetime]:
    """The credentials in an AssumeRoleWithWebIdentity answer, or StsRefused with STS's error."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise StsRefused("InvalidResponse", f"the gateway answered {status} with no STS document") from None
    if status != 200 or root.tag.endswith("ErrorResponse"):
        code = root.findtext(f".//{_NS}Code") or root.findtext(".//Code") or f"HTTP{status}"
        message = root.findtext(f".//{_NS}Message") or root.findtext(".//Message") or ""
        raise StsRefused(code, message)
    found = root.find(f"{_NS}AssumeRoleWithWebIdentityResult/{_NS}Credentials")
    if found is None:
        raise StsRefused("InvalidResponse", "the STS answer holds no credentials")
    values = {
        name: found.findtext(f"{_NS}{name}") for name in ("AccessKeyId", "SecretAccessKey", "SessionToken")
    }
    expiration = found.findtext(f"{_NS}Expiration")
    if not all(values.values()) or not expiration:
        raise StsRefused("InvalidResponse", "the STS answer's credentials are incomplete")
    expires = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    creds = Credentials(values["AccessKeyId"] or "", values["SecretAccessKey"] or "", values["SessionToken"])
    return creds, expires


def refresh_time(issued: datetime, expiration: datetime) -> datetime:
    life = expiration - issued
    return min(expiration - life * _REFRESH_SHARE, expiration - _REFRESH_MARGIN)


class WebIdentityCredentials:
    """Current temporary credentials; one exchange at a time, however many requests wait for it."""

    def __init__(
        self,
        *,
        sts_url: str,
        token_file: Path,
        role_arn: str,
        session_name: str,
        duration_seconds: int | None,
        http: aiohttp.ClientSession,
    ) -> None:
        self._sts_url = sts_url
        self._token_file = token_file
        self._role_arn = role_arn
        self._session_name = session_name
        self._duration = duration_seconds
        self._http = http
        self._session: Session | None = None
        self._lock = asyncio.Lock()

    @property
    def valid(self) -> bool:
        session = self._session
        return session is not None and datetime.now(UTC) < session.expiration

    async def current(self) -> Credentials:
        session = self._session
        if session is not None and datetime.now(UTC) < session.refresh_at:
            return session.credentials
        async with self._lock:
            session = self._session
            now = datetime.now(UTC)
            if session is not None and now < session.refresh_at:
                return session.credentials  # another request refreshed while this one waited
            try:
                self._session = await self._exchange(now)
            except (StsRefused, OSError, aiohttp.ClientError, TimeoutError) as exc:
                if session is not None and now < session.expiration - timedelta(seconds=5):
                    # Still valid: keep using it and retry on a later request rather than fail this one.
                    log.warning("sts_refresh_failed", error=str(exc)[:300])
                    return session.credentials
                raise
            return self._session.credentials

    def invalidate(self, access_key_id: str) -> None:
        """The gateway refused these credentials (revoked session): exchange again on the next request."""
        session = self._session
        if session is not None and session.credentials.access_key_id == access_key_id:
            self._session = None

    async def _exchange(self, now: datetime) -> Session:
        token = self._token_file.read_text().strip()
        form = {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": self._role_arn,
            "RoleSessionName": self._session_name,
            "WebIdentityToken": token,
        }
        if self._duration is not None:
            form["DurationSeconds"] = str(self._duration)
        async with self._http.post(
            self._sts_url,
            data=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            body = await resp.content.read(_MAX_RESPONSE)
            creds, expiration = parse_sts_response(resp.status, body)
        log.info(
            "sts_credentials_obtained", access_key_id=creds.access_key_id, expires=expiration.isoformat()
        )
        return Session(creds, expiration, refresh_time(now, expiration))
