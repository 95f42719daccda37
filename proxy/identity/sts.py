"""STS AssumeRoleWithWebIdentity on the S3 listener: a verified web identity token -> temporary credentials.

The query API that boto3's and the aws cli's `sts` clients send with `endpoint_url` set to the gateway:
an unsigned, form-encoded `POST /`. Only that one action is answered, and only when `[sts]` is enabled.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import aiohttp
import structlog
from aiohttp import web

from proxy.errors import S3Error
from proxy.identity.jwks import JwksSource
from proxy.identity.principals import Principal
from proxy.identity.sessions import TemporaryCredentials, issue_session
from proxy.identity.trust import (
    MAX_SESSION_SECONDS,
    MIN_SESSION_SECONDS,
    StsSettings,
    map_identity,
    session_seconds,
)
from proxy.identity.webidentity import (
    IdentityError,
    UnknownKeyId,
    WebIdentity,
    invalid_token,
    unverified_issuer,
    verify_token,
)
from proxy.observe.events import Outcome, RequestEvent, Verdict

log = structlog.get_logger("grantgate.sts")

ACTION = "AssumeRoleWithWebIdentity"
API_VERSION = "2011-06-15"
NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
FORM_TYPE = "application/x-www-form-urlencoded"
# A form carrying a 20 000-character token and the other parameters fits easily.
MAX_FORM_BYTES = 64 * 1024
OPERATION = "sts:AssumeRoleWithWebIdentity"
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_ROLE_ARN_MAX = 2048
_ROLE_ARN_MIN = 20


@dataclass(frozen=True, slots=True)
class AssumeRequest:
    role_arn: str
    session_name: str
    token: str
    duration_seconds: int | None


@dataclass(frozen=True, slots=True)
class Assumed:
    identity: WebIdentity
    principal: Principal
    credentials: TemporaryCredentials
    role_arn: str
    session_name: str


# A principal's session cut-off at `now` (sessions issued before it are refused), from the key ring.
SessionCutoff = Callable[[str, datetime], datetime | None]


class StsService:
    """Verifies tokens against each configured issuer's keys and issues sealed session credentials."""

    def __init__(
        self,
        settings: StsSettings,
        server_key: bytes,
        resolve: Callable[[str], Path],
        session_cutoff: SessionCutoff,
        emit: Callable[[RequestEvent], None],
    ) -> None:
        """`resolve`: a configured file path made absolute; `emit`: where each call's event goes."""
        self.settings = settings
        self._server_key = server_key
        self._session_cutoff = session_cutoff
        self.emit = emit
        self._session: aiohttp.ClientSession | None = None
        self.sources = {
            issuer.issuer: JwksSource(issuer, resolve, self._http) for issuer in self.settings.issuers
        }

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def close(self) -> None:
        """The JWKS HTTP client lives as long as the listener."""
        if self._session is not None:
            await self._session.close()

    async def verify(self, token: str, now: datetime) -> WebIdentity:
        issuer = unverified_issuer(token)
        source = self.sources.get(issuer)
        settings = self.settings.issuer(issuer)
        if source is None or settings is None:
            raise invalid_token(f"No OpenIDConnect provider is trusted for issuer {_shown(issuer)}.")
        keys = await source.key_set()
        try:
            return verify_token(token, settings, keys, now)
        except UnknownKeyId:
            # The issuer may have rotated its keys since we fetched them.
            keys = await source.key_set(refresh=True)
            return verify_token(token, settings, keys, now)

    async def assume(self, request: AssumeRequest, now: datetime) -> Assumed:
        identity = await self.verify(request.token, now)
        principal = map_identity(self.settings.rules, identity.issuer, identity.claims)
        if principal is None:
            raise IdentityError(
                "AccessDenied",
                f"Not authorized to perform {OPERATION}: no trust rule maps subject "
                f"{_shown(identity.subject)} of {_shown(identity.issuer)} to a principal.",
                403,
            )
        lifetime = session_seconds(self.settings, request.duration_seconds)
        credentials = issue_session(
            self._server_key,
            principal,
            now=self._issue_time(principal, now),
            ttl=timedelta(seconds=lifetime),
            source="sts",
        )
        return Assumed(identity, principal, credentials, request.role_arn, request.session_name)

    def _issue_time(self, principal: Principal, now: datetime) -> datetime:
        # Sessions carry whole seconds: one issued in the second of a revocation would otherwise be
        # refused at once. Start it at the next whole second after the principal's cut-off instead.
        cutoff = self._session_cutoff(principal.name, now)
        if cutoff is None or cutoff <= now.replace(microsecond=0):
            return now
        return datetime.fromtimestamp(math.ceil(cutoff.timestamp()), UTC)


def is_sts_call(request: web.BaseRequest) -> bool:
    """An STS query-API call: a form POST to `/` with no query (proxy/s3/listener.py checks the method).

    No S3 operation has that shape (POST Object is multipart/form-data to a bucket), so taking these
    requests away from the S3 pipeline cannot hide an S3 request from authorization.
    """
    return request.raw_path == "/" and request.content_type == FORM_TYPE


async def expect_continue(request: web.BaseRequest) -> None:
    # Checked once the form is read; there is nothing to authenticate before the body.
    await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)


@dataclass(frozen=True, slots=True)
class _Ending:
    """How an STS call ended, for its event: status, S3-style code, decision and outcome."""

    status: int = 0
    reason: str | None = None
    decision: Verdict = Verdict.DENY
    outcome: Outcome = Outcome.OK


async def handle(service: StsService, request: web.BaseRequest) -> web.Response:
    request_id = secrets.token_hex(8).upper()
    started_at, started = time.time(), time.perf_counter()
    assumed: Assumed | None = None
    ending = _Ending()  # the client went away before an answer
    try:
        form = await read_form(request)
        assumed = await service.assume(parse_request(form), datetime.now(UTC))
        ending = _Ending(200, None, Verdict.ALLOW)
        return web.Response(
            body=success_xml(assumed, request_id),
            content_type="text/xml",
            headers={"x-amzn-RequestId": request_id},
        )
    except IdentityError as err:
        outcome = Outcome.DENIED if err.status == 403 else Outcome.CLIENT_ERROR
        ending = _Ending(err.status, err.code, Verdict.DENY, outcome)
        log.info("sts_refused", request_id=request_id, code=err.code, message=err.message)
        return error_response(err, request_id)
    except S3Error as err:
        # The gateway's own state is unavailable (store unreachable past the grace period): fail closed.
        ending = _Ending(err.status, err.code, Verdict.ERROR, Outcome.ERROR)
        return error_response(IdentityError(err.code, err.message, err.status), request_id)
    except Exception:
        log.exception("sts_failed", request_id=request_id)
        ending = _Ending(500, None, Verdict.ERROR, Outcome.INTERNAL_ERROR)
        failure = IdentityError("InternalFailure", "The request processing has failed.", 500)
        return error_response(failure, request_id)
    finally:
        principal = assumed.principal if assumed is not None else None
        service.emit(
            RequestEvent(
                request_id=request_id,
                started_at=started_at,
                source_ip=request.remote or "",
                user_agent=request.headers.get("User-Agent", "")[:256],
                method=request.method,
                operation=OPERATION,
                principal=principal.name if principal else None,
                groups=tuple(sorted(principal.groups)) if principal else (),
                access_key_id=assumed.credentials.access_key_id if assumed is not None else None,
                status=ending.status,
                reason=ending.reason,
                decision=ending.decision,
                outcome=ending.outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        )


# ---------------------------------------------------------------- the form


async def read_form(request: web.BaseRequest) -> dict[str, str]:
    data = bytearray()
    async for chunk in request.content.iter_any():
        data += chunk
        if len(data) > MAX_FORM_BYTES:
            raise IdentityError("InvalidParameterValue", "The request body is too large.")
    try:
        pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(data))
    except (UnicodeDecodeError, ValueError):
        raise IdentityError("MalformedQueryString", "The request body is not a valid form.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise IdentityError("InvalidParameterValue", f"The parameter {_shown(name)} appears twice.")
        form[name] = value
    return form


def parse_request(form: Mapping[str, str]) -> AssumeRequest:
    """Check the action, version and parameters as STS does; only AssumeRoleWithWebIdentity is served."""
    action = form.get("Action")
    if action is None:
        raise IdentityError("MissingAction", "Missing Action")
    if action != ACTION:
        raise IdentityError("InvalidAction", f"Could not find operation {_shown(action)} for version.")
    if form.get("Version") != API_VERSION:
        raise IdentityError("InvalidParameterValue", f"Version must be {API_VERSION}.")
    for name in ("RoleArn", "RoleSessionName", "WebIdentityToken"):
        if not form.get(name):
            raise IdentityError("MissingParameter", f"The request must contain the parameter {name}.")
    if any(name.startswith(("Policy", "PolicyArns")) for name in form):
        # Session policies would narrow access; GrantGate's grants already are the policy.
        raise IdentityError("InvalidParameterValue", "Session policies are not supported.")
    role_arn, session_name = form["RoleArn"], form["RoleSessionName"]
    if not _ROLE_ARN_MIN <= len(role_arn) <= _ROLE_ARN_MAX:
        raise _validation("RoleArn", f"length between {_ROLE_ARN_MIN} and {_ROLE_ARN_MAX}")
    if not _SESSION_NAME.fullmatch(session_name):
        raise _validation("RoleSessionName", "2 to 64 characters of [\\w+=,.@-]")
    return AssumeRequest(
        role_arn, session_name, form["WebIdentityToken"], _duration(form.get("DurationSeconds"))
    )


def _duration(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise _validation("DurationSeconds", "an integer")
    value = int(text)
    if not MIN_SESSION_SECONDS <= value <= MAX_SESSION_SECONDS:
        raise _validation("DurationSeconds", f"between {MIN_SESSION_SECONDS} and {MAX_SESSION_SECONDS}")
    return value


def _validation(name: str, constraint: str) -> IdentityError:
    return IdentityError("ValidationError", f"Value at '{name}' failed to satisfy constraint: {constraint}.")


def _shown(text: str) -> str:
    """Untrusted text quoted into a message: bounded, printable only."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text[:200])
    return repr(cleaned)


# ---------------------------------------------------------------- responses


def success_xml(assumed: Assumed, request_id: str) -> bytes:
    creds, identity = assumed.credentials, assumed.identity
    role_name = assumed.role_arn.rsplit("/", 1)[-1] or "grantgate"
    arn = f"arn:aws:sts::000000000000:assumed-role/{role_name}/{assumed.session_name}"
    expiration = creds.expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = (
        f'<AssumeRoleWithWebIdentityResponse xmlns="{NAMESPACE}">'
        "<AssumeRoleWithWebIdentityResult>"
        f"<SubjectFromWebIdentityToken>{escape(identity.subject)}</SubjectFromWebIdentityToken>"
        f"<Audience>{escape(identity.audience)}</Audience>"
        "<AssumedRoleUser>"
        f"<Arn>{escape(arn)}</Arn>"
        f"<AssumedRoleId>{escape(creds.access_key_id)}:{escape(assumed.session_name)}</AssumedRoleId>"
        "</AssumedRoleUser>"
        "<Credentials>"
        f"<AccessKeyId>{creds.access_key_id}</AccessKeyId>"
        f"<SecretAccessKey>{escape(creds.secret_access_key)}</SecretAccessKey>"
        f"<SessionToken>{escape(creds.session_token)}</SessionToken>"
        f"<Expiration>{expiration}</Expiration>"
        "</Credentials>"
        f"<Provider>{escape(identity.issuer)}</Provider>"
        "</AssumeRoleWithWebIdentityResult>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        "</AssumeRoleWithWebIdentityResponse>"
    )
    return body.encode()


def error_response(err: IdentityError, request_id: str) -> web.Response:
    kind = "Receiver" if err.status >= 500 else "Sender"
    body = (
        f'<ErrorResponse xmlns="{NAMESPACE}">'
        f"<Error><Type>{kind}</Type><Code>{escape(err.code)}</Code>"
        f"<Message>{escape(err.message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId>"
        "</ErrorResponse>"
    )
    return web.Response(
        status=err.status,
        body=body.encode(),
        content_type="text/xml",
        headers={"x-amzn-RequestId": request_id},
    )
