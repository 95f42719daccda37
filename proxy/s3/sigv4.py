"""AWS Signature Version 4 for S3: parse what a caller claims, verify it, and sign upstream requests.

Verification and signing share one canonical-request/string-to-sign/signing-key implementation.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote

from multidict import MultiMapping

from proxy.errors import S3Error
from proxy.s3.request import RequestHead

ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4A_ALGORITHM = "AWS4-ECDSA-P256-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_EXPIRES = 604800  # one week, S3's limit

PRESIGN_PARAMS = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)
# Any of these in the query means the caller attempted query-string (presigned) SigV4.
_PRESIGN_MARKERS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
_SENTINELS = STREAMING_MODES | {UNSIGNED_PAYLOAD}
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_UNRESERVED_SLASH = _UNRESERVED + "/"
_ESCAPES = {chr(code): f"%{code:02X}" for code in range(128)}
_HEX_DIGITS = "0123456789abcdefABCDEF"
_LOWER_HEX_DIGITS = "0123456789abcdef"
_SIGV2_MESSAGE = (
    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256 "
    "(for boto3 presigned URLs: Config(signature_version='s3v4'))."
)
_SIGV4A_MESSAGE = (
    "AWS4-ECDSA-P256-SHA256 (SigV4A) is not supported by this endpoint. Please use AWS4-HMAC-SHA256."
)
_QUERY_PARAMS_REQUIRED = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
    "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)
_BAD_PAYLOAD_HASH = (
    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value."
)
# x-amz-content-sha256 may go unsigned: its value is the last line of the canonical request, so the
# signature binds it anyway. Every other x-amz-* header must be in SignedHeaders.
_BOUND_WITHOUT_SIGNING = frozenset({"x-amz-content-sha256"})


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the caller claims about its signature: parsed, not yet verified."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    request_time: datetime
    payload_hash: str
    presigned: bool
    expires_seconds: int | None
    security_token: str | None

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}/aws4_request"


# --- parsing -------------------------------------------------------------------------------------------


def parse_auth(head: RequestHead) -> SignedRequest:
    """Extract the SigV4 claims from the Authorization header or the presigned query; reject the rest."""
    auth_values = head.headers.getall("Authorization", ())
    query_auth = any(name in _PRESIGN_MARKERS for name, _ in head.query)
    if auth_values and query_auth:
        raise S3Error.invalid_argument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
            "string parameter or the Authorization header should be specified"
        )
    if auth_values:
        return _parse_header_auth(head, auth_values)
    if query_auth:
        return _parse_query_auth(head)
    if head.has_query("AWSAccessKeyId") or head.has_query("Signature"):
        raise S3Error.access_denied(_SIGV2_MESSAGE)
    raise S3Error.access_denied("Anonymous access is not allowed")


def _header_malformed(message: str) -> S3Error:
    return S3Error("AuthorizationHeaderMalformed", message, 400)


def _query_malformed(message: str) -> S3Error:
    return S3Error("AuthorizationQueryParametersError", message, 400)


def _parse_header_auth(head: RequestHead, auth_values: Sequence[str]) -> SignedRequest:
    if len(auth_values) != 1:
        raise _header_malformed(
            "The authorization header is malformed; only one Authorization header is allowed."
        )
    scheme, _, rest = auth_values[0].strip().partition(" ")
    if scheme == SIGV4A_ALGORITHM:
        raise S3Error.not_implemented(_SIGV4A_MESSAGE)
    if scheme == "AWS":
        raise S3Error.access_denied(_SIGV2_MESSAGE)
    if scheme != ALGORITHM:
        raise S3Error.invalid_argument("Unsupported Authorization Type")

    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in fields:
            raise _header_malformed(
                "The authorization header is malformed; it must have the form "
                "'AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...'."
            )
        fields[name] = value
    credential, signed_headers, signature = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    )
    if credential is None or signed_headers is None or signature is None or len(fields) != 3:
        raise _header_malformed(
            "The authorization header is malformed; it must contain exactly "
            "Credential, SignedHeaders and Signature."
        )

    akid, scope_date, region, service = _parse_credential(credential, _header_malformed)
    amz_date, request_time = header_request_date(
        _single_header(head.headers, "x-amz-date"), _single_header(head.headers, "date")
    )
    payload_hash = _single_header(head.headers, "x-amz-content-sha256")
    if payload_hash is None:
        raise S3Error.invalid_request("Missing required header for this request: x-amz-content-sha256")
    return SignedRequest(
        access_key_id=akid,
        scope_date=scope_date,
        region=region,
        service=service,
        signed_headers=_parse_signed_headers(signed_headers, _header_malformed),
        signature=_parse_signature(signature, _header_malformed),
        amz_date=amz_date,
        request_time=request_time,
        payload_hash=_check_payload_hash(payload_hash),
        presigned=False,
        expires_seconds=None,
        security_token=_single_header(head.headers, "x-amz-security-token"),
    )


def _parse_query_auth(head: RequestHead) -> SignedRequest:
    params: dict[str, str] = {}
    declared_hash: str | None = None  # the first X-Amz-Content-Sha256, found in the same pass
    for name, value in head.query:
        if name in PRESIGN_PARAMS:
            if name in params:
                raise _query_malformed(f"{name} must appear only once in the query string.")
            params[name] = value
        elif name == "X-Amz-Content-Sha256" and declared_hash is None:
            declared_hash = value
    algorithm = params.get("X-Amz-Algorithm")
    if algorithm == SIGV4A_ALGORITHM:
        raise S3Error.not_implemented(_SIGV4A_MESSAGE)
    credential = params.get("X-Amz-Credential")
    date_text = params.get("X-Amz-Date")
    expires_text = params.get("X-Amz-Expires")
    signed_headers = params.get("X-Amz-SignedHeaders")
    signature = params.get("X-Amz-Signature")
    if (
        algorithm is None
        or credential is None
        or date_text is None
        or expires_text is None
        or signed_headers is None
        or signature is None
    ):
        raise _query_malformed(_QUERY_PARAMS_REQUIRED)
    if algorithm != ALGORITHM:
        raise _query_malformed('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
        raise _query_malformed("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires < 1:
        raise _query_malformed("X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGN_EXPIRES:
        raise _query_malformed("X-Amz-Expires must be less than a week (in seconds) that is 604800")

    akid, scope_date, region, service = _parse_credential(credential, _query_malformed)
    amz_date, request_time = _parse_request_date(date_text)
    # Presigned URLs normally sign no payload; a client may still declare one (header or query), and
    # then it is the last line of the canonical request.
    payload_hash = _single_header(head.headers, "x-amz-content-sha256") or declared_hash
    token = params.get("X-Amz-Security-Token")
    if token is None:
        token = _single_header(head.headers, "x-amz-security-token")
    return SignedRequest(
        access_key_id=akid,
        scope_date=scope_date,
        region=region,
        service=service,
        signed_headers=_parse_signed_headers(signed_headers, _query_malformed),
        signature=_parse_signature(signature, _query_malformed),
        amz_date=amz_date,
        request_time=request_time,
        payload_hash=UNSIGNED_PAYLOAD if payload_hash is None else _check_payload_hash(payload_hash),
        presigned=True,
        expires_seconds=expires,
        security_token=token,
    )


def _single_header(headers: MultiMapping[str], name: str) -> str | None:
    values = headers.getall(name, ())
    if not values:
        return None
    if len(values) > 1:
        raise S3Error.invalid_argument(f"Multiple {name} headers are not allowed.")
    return values[0].strip()


_ErrorFactory = Callable[[str], S3Error]


def _parse_credential(credential: str, error: _ErrorFactory) -> tuple[str, str, str, str]:
    akid, *scope = credential.rsplit("/", 4)
    if len(scope) != 4 or not akid or scope[3] != "aws4_request":
        raise error(
            'The credential is malformed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    scope_date, region, service, _ = scope
    if len(scope_date) != 8 or not (scope_date.isascii() and scope_date.isdigit()):
        raise error(f'Invalid credential date "{scope_date}". This date is not in yyyyMMdd format.')
    if not region:
        raise error("The credential is malformed; the region is empty.")
    if service != "s3":
        raise error(
            f'The credential is malformed; incorrect service "{service}". This endpoint belongs to "s3".'
        )
    return akid, scope_date, region, service


def _parse_signed_headers(text: str, error: _ErrorFactory) -> tuple[str, ...]:
    names = tuple(text.lower().split(";"))
    if not all(names):
        raise error("SignedHeaders is malformed; expecting a ';'-separated list of header names.")
    return names


def _parse_signature(text: str, error: _ErrorFactory) -> str:
    signature = text.strip().lower()
    if len(signature) != 64 or signature.strip(_LOWER_HEX_DIGITS):  # strip: all hex leaves nothing
        raise error("The signature is malformed; expecting 64 hexadecimal characters.")
    return signature


def _check_payload_hash(value: str) -> str:
    if value in _SENTINELS or (len(value) == 64 and not value.strip(_HEX_DIGITS)):
        return value
    raise S3Error.invalid_argument(_BAD_PAYLOAD_HASH)


_NO_VALID_DATE = "AWS authentication requires a valid Date or x-amz-date header"


def _parse_request_date(text: str | None) -> tuple[str, datetime]:
    if text is None:
        raise S3Error.access_denied(_NO_VALID_DATE)
    return text, _request_time(text)


def header_request_date(amz_date: str | None, date: str | None) -> tuple[str, datetime]:
    """The signing timestamp of a header-signed request: X-Amz-Date, else the HTTP Date header.

    With a Date header and no X-Amz-Date (botocore does this when the caller sets Date), the client
    signs the Date header's text as a header but puts the same moment in the string to sign in SigV4's
    basic ISO 8601 form, as S3 does when it checks it: so the Date is parsed and re-formatted here.
    """
    if amz_date is not None or date is None:
        return _parse_request_date(amz_date)
    moment = _http_date(date)
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}T{moment.hour:02d}{moment.minute:02d}"
        f"{moment.second:02d}Z",
        moment,
    )


@lru_cache(maxsize=64)
def _http_date(text: str) -> datetime:
    """An RFC 1123 / RFC 2822 date (`Fri, 04 Dec 2026 17:44:06 GMT`, or a numeric zone such as `-0000`
    or `+0100`), as an aware UTC datetime."""
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        raise S3Error.access_denied(_NO_VALID_DATE) from None
    # `-0000` means "UTC, zone not known" and parses naive: it is still UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@lru_cache(maxsize=256)
def _request_time(text: str) -> datetime:
    """Parse the SigV4 basic ISO 8601 timestamp by hand (strptime costs ~10 µs); concurrent requests
    mostly share the same second, hence the small cache."""
    if (
        len(text) != 16
        or text[8] != "T"
        or text[15] != "Z"
        or not text.isascii()
        or not (text[:8] + text[9:15]).isdigit()
    ):
        raise S3Error.access_denied(_NO_VALID_DATE)
    try:
        return datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[9:11]),
            int(text[11:13]),
            int(text[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        raise S3Error.access_denied(_NO_VALID_DATE) from None


# --- canonical forms ----------------------------------------------------------------------------------


def uri_encode(text: str, *, keep_slash: bool) -> str:
    """AWS UriEncode: unreserved A-Za-z0-9-._~ kept, everything else %XX (upper case) over UTF-8."""
    # Fast path for the common all-unreserved text: strip() leaves something only if a character
    # outside the set is present (quote() costs ~1 µs per call even when it changes nothing).
    safe = _UNRESERVED_SLASH if keep_slash else _UNRESERVED
    rest = text.strip(safe)
    if not rest:
        return text
    if text.isascii():
        # A few characters to escape (the '/'s of a credential scope): replacing each costs a third of
        # quote(), which calls a Python function per character. '%' goes first, so the escapes added
        # after it are left alone.
        unsafe = set(rest).difference(safe)
        if "%" in unsafe:
            text = text.replace("%", "%25")
            unsafe.discard("%")
        for char in unsafe:
            text = text.replace(char, _ESCAPES[char])
        return text
    try:
        return quote(text, safe="/" if keep_slash else "", encoding="utf-8", errors="strict")
    except UnicodeEncodeError:
        raise S3Error.invalid_argument("The request contains characters that are not valid UTF-8.") from None


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Decoded (name, value) pairs -> SigV4 canonical query string, sorted by encoded name then value."""
    encoded = sorted([(uri_encode(k, keep_slash=False), uri_encode(v, keep_slash=False)) for k, v in pairs])
    return "&".join([f"{k}={v}" for k, v in encoded])


def _trim(value: str) -> str:
    # Same whitespace semantics as botocore (str.split), the client most of our callers run.
    return " ".join(value.split())


def _canonical(
    method: str, path: str, query: str, header_lines: str, signed_headers: str, payload_hash: str
) -> str:
    return f"{method}\n{path or '/'}\n{query}\n{header_lines}\n{signed_headers}\n{payload_hash}"


def canonical_request(head: RequestHead, signed: SignedRequest, host: str) -> str:
    """The SigV4 canonical request for an incoming request, exactly as the caller should have built it."""
    query = head.query
    if signed.presigned:
        query = tuple(pair for pair in query if pair[0] != "X-Amz-Signature")
    headers = head.headers
    lines = []
    for name in signed.signed_headers:
        # The host value comes from the listener (it may trust X-Forwarded-Host), not from head.
        value = _trim(host) if name == "host" else ",".join(_trim(v) for v in headers.getall(name, ()))
        lines.append(f"{name}:{value}\n")
    return _canonical(
        head.method,
        head.raw_path,
        canonical_query(query),
        "".join(lines),
        ";".join(signed.signed_headers),
        signed.payload_hash,
    )


def _string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def string_to_sign(signed: SignedRequest, canonical: str) -> str:
    return _string_to_sign(signed.amz_date, signed.scope, canonical)


@lru_cache(maxsize=4096)
def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """The derived key for one secret, day, region and service (cached: four HMACs per request saved)."""
    key = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
    key = hmac.digest(key, region.encode(), "sha256")
    key = hmac.digest(key, service.encode(), "sha256")
    return hmac.digest(key, b"aws4_request", "sha256")


def _signature(key: bytes, text: str) -> str:
    # hmac.digest is the one-shot C path: several times cheaper than hmac.new(...).hexdigest().
    return hmac.digest(key, text.encode("utf-8", "surrogateescape"), "sha256").hex()


# --- verification -------------------------------------------------------------------------------------


def verify(
    head: RequestHead,
    signed: SignedRequest,
    secret: str,
    now: datetime,
    *,
    host: str | None = None,
    max_skew: timedelta = timedelta(minutes=15),
) -> bytes:
    """Check time, scope, signed headers and the signature; return the signing key for chunk signatures."""
    malformed = _query_malformed if signed.presigned else _header_malformed
    if signed.scope_date != signed.amz_date[:8]:
        raise malformed(
            f'Invalid credential date "{signed.scope_date}". This date is not the same as X-Amz-Date: '
            f'"{signed.amz_date[:8]}".'
        )
    if "host" not in signed.signed_headers:
        raise malformed("The host header must be signed.")
    _check_time(signed, now, max_skew)
    _check_all_amz_headers_signed(head, signed)

    key = signing_key(secret, signed.scope_date, signed.region, signed.service)
    canonical = canonical_request(head, signed, head.host if host is None else host)
    expected = _signature(key, string_to_sign(signed, canonical))
    if not hmac.compare_digest(expected, signed.signature):
        raise S3Error.signature_mismatch()
    return key


def _check_time(signed: SignedRequest, now: datetime, max_skew: timedelta) -> None:
    if signed.presigned:
        if signed.request_time - now > max_skew:
            raise S3Error.access_denied("Request is not valid yet")
        if now > signed.request_time + timedelta(seconds=signed.expires_seconds or 0):
            raise S3Error.access_denied("Request has expired")
    elif abs(now - signed.request_time) > max_skew:
        raise S3Error.time_skewed()


def _check_all_amz_headers_signed(head: RequestHead, signed: SignedRequest) -> None:
    # Without this, a header injected by whoever holds the request (x-amz-copy-source, x-amz-acl, a
    # security token) would be re-signed by the gateway and reach the bucket as if the caller sent it.
    signed_set = signed.signed_headers
    for name in head.headers:
        lower = name.lower()
        if lower.startswith("x-amz-") and lower not in signed_set and lower not in _BOUND_WITHOUT_SIGNING:
            raise S3Error.access_denied("There were headers present in the request which were not signed")


# --- signing (upstream) -------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4)
def _amz_date(unix_second: int) -> str:
    """x-amz-date for a whole second; concurrent requests share it (formatting one costs ~2 µs)."""
    utc = datetime.fromtimestamp(unix_second, UTC)
    return f"{utc.year:04d}{utc.month:02d}{utc.day:02d}T{utc.hour:02d}{utc.minute:02d}{utc.second:02d}Z"


def sign(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    payload_hash: str,
    *,
    access_key_id: str,
    secret: str,
    session_token: str | None,
    region: str,
    now: datetime,
    service: str = "s3",
) -> dict[str, str]:
    """Sign a request for the upstream bucket; returns the headers to add (Authorization and friends).

    `path` is the already-encoded path the request is sent with; `query` are decoded pairs; `headers`
    must contain `host`. Every given header is signed, plus x-amz-date/x-amz-content-sha256/token.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    since_epoch = now - _EPOCH  # exact integer arithmetic, whatever now's time zone
    amz_date = _amz_date(since_epoch.days * 86400 + since_epoch.seconds)
    scope_date = amz_date[:8]
    added = {"x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    if session_token is not None:
        added["x-amz-security-token"] = session_token
    to_sign = {name.lower(): value for name, value in headers.items()}
    if "host" not in to_sign:
        raise ValueError("headers must contain host")
    to_sign.update(added)
    names = sorted(to_sign)
    signed_headers = ";".join(names)
    canonical = _canonical(
        method.upper(),
        path,
        canonical_query(query),
        "".join(f"{name}:{_trim(to_sign[name])}\n" for name in names),
        signed_headers,
        payload_hash,
    )
    scope = f"{scope_date}/{region}/{service}/aws4_request"
    signature = _signature(
        signing_key(secret, scope_date, region, service), _string_to_sign(amz_date, scope, canonical)
    )
    added["Authorization"] = (
        f"{ALGORITHM} Credential={access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return added
