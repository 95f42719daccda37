"""Where an S3 request points: bucket and key from path-style or virtual-hosted URLs, decoded once.

Pure. Every malformed or unsafe name becomes an S3Error here, so the rest of the pipeline only ever sees
canonical bucket names and keys exactly as S3 stores them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.errors import S3Error
from proxy.s3.request import RequestHead
from proxy.s3.sigv4 import uri_encode

MAX_KEY_BYTES = 1024

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_SHAPED_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# A '.' or '..' segment; '\' counts as a separator too: some upstreams and path libraries treat it as one.
_DOT_SEGMENT_RE = re.compile(r"(?:^|[/\\])\.\.?(?=[/\\]|$)")
_CONTROL_RE = re.compile(r"[\x00-\x1f]")


@dataclass(frozen=True, slots=True)
class Address:
    bucket: str | None  # None: the service root (ListBuckets)
    key: str | None  # decoded exactly once, as S3 stores it; None for bucket-level requests
    virtual_host: bool


def resolve(head: RequestHead, *, virtual_host_base: str = "", host: str | None = None) -> Address:
    """Bucket and key of a request: from `<bucket>.<base>` hosts when a base is configured, else the path."""
    raw_path = head.raw_path
    if not raw_path.startswith("/"):
        raise _invalid_uri()
    bucket = _bucket_from_host(head.host if host is None else host, virtual_host_base)
    if bucket is not None:
        raw_key = raw_path[1:]
        return Address(bucket, decode_key(raw_key) if raw_key else None, virtual_host=True)
    if raw_path == "/":
        return Address(None, None, virtual_host=False)
    raw_bucket, _, raw_key = raw_path[1:].partition("/")
    return Address(
        validate_bucket(_percent_decode(raw_bucket)),
        decode_key(raw_key) if raw_key else None,
        virtual_host=False,
    )


def decode_key(raw: str) -> str:
    """Percent-decode a key once (`+` stays `+`, `%252F` becomes the text `%2F`), then validate it."""
    return validate_key(_percent_decode(raw))


def validate_key(key: str) -> str:
    """Refuse keys this gateway will not pass on: empty, too long, control characters, `.`/`..` segments."""
    if not key:
        raise S3Error.invalid_argument("The object key must not be empty.")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise _invalid_uri() from None
    if size > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long.", 400)
    if _CONTROL_RE.search(key):
        raise S3Error.invalid_argument("Object keys containing control characters are not supported.")
    # A '.' or '..' segment could be normalised away by the upstream or an HTTP library, moving the
    # request outside the prefix its grant was checked against.
    if _DOT_SEGMENT_RE.search(key):
        raise S3Error.invalid_argument("Object keys with '.' or '..' path segments are not supported.")
    return key


def validate_bucket(name: str) -> str:
    """S3's bucket naming rules; anything else is InvalidBucketName."""
    if not _BUCKET_RE.fullmatch(name) or ".." in name or _IP_SHAPED_RE.fullmatch(name):
        raise S3Error("InvalidBucketName", "The specified bucket is not valid.", 400)
    return name


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """`x-amz-copy-source` (`[/]bucket/key[?versionId=v]`, URL-encoded) -> (bucket, key, version_id)."""
    path, has_query, query = value.partition("?")
    version_id = _copy_source_version(query) if has_query else None
    if path.startswith("/"):
        path = path[1:]
    if _percent_decode(path).startswith("arn:"):
        raise S3Error.invalid_argument("Access point ARNs in x-amz-copy-source are not supported.")
    # S3 decodes this header like a form value, so a literal '+' may mean a space: refuse the ambiguity.
    if "+" in path:
        raise S3Error.invalid_argument("x-amz-copy-source must be URL-encoded: write '+' as %2B.")
    # Split on the literal '/' before decoding, so an encoded %2F can never move the bucket boundary.
    raw_bucket, sep, raw_key = path.partition("/")
    if not sep or not raw_key:
        raise S3Error.invalid_argument("x-amz-copy-source must look like bucket/key.")
    return validate_bucket(_percent_decode(raw_bucket)), decode_key(raw_key), version_id


def object_path(bucket: str, key: str) -> str:
    """The canonical path-style URL path of an object, keys encoded with AWS UriEncode keeping '/'."""
    return f"/{bucket}/{uri_encode(key, keep_slash=True)}"


def _copy_source_version(query: str) -> str:
    name, eq, value = query.partition("=")
    if name != "versionId" or not eq or not value or "&" in value:
        raise S3Error.invalid_argument("x-amz-copy-source accepts only a ?versionId=... suffix.")
    return _percent_decode(value)


def _bucket_from_host(host: str, base: str) -> str | None:
    if not base:
        return None
    name = _hostname(host)
    base = _hostname(base)
    if not base or not name.endswith("." + base):
        return None
    return validate_bucket(name[: -len(base) - 1])


def _hostname(host: str) -> str:
    """Lowercased host without port or the trailing dot of a fully qualified name."""
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, never a virtual host
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0].rstrip(".") if ":" in host else host.rstrip(".")


def _percent_decode(raw: str) -> str:
    """Decode %XX escapes once into strict UTF-8; malformed escapes or bytes are InvalidURI."""
    try:
        data = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise _invalid_uri() from None
    if b"%" in data:
        first, *rest = data.split(b"%")
        decoded = bytearray(first)
        for chunk in rest:
            if len(chunk) < 2 or chunk[0] not in _HEX or chunk[1] not in _HEX:
                raise _invalid_uri()
            decoded.append(int(chunk[:2], 16))
            decoded += chunk[2:]
        data = bytes(decoded)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_uri() from None


def _invalid_uri() -> S3Error:
    return S3Error("InvalidURI", "Couldn't parse the specified URI.", 400)
