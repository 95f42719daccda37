"""SigV4 verification and signing, checked against AWS's documented examples and botocore's own signers."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.auth
import botocore.crt.auth
import botocore.session
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode, percent_encode_sequence
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.s3 import sigv4
from proxy.s3.request import RequestHead

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE//token+with/odd=chars"
NOW = datetime(2026, 11, 24, 3, 45, 0, tzinfo=UTC)
ENDPOINT = "https://s3.example.test"
HOST = "s3.example.test"

AWKWARD_KEYS = [
    "plain.txt",
    "with space/and+plus@at.bin",
    "unicode/ünïcødé/ключ/日本語.parquet",
    "double//slash//",
    "literal%2Fpercent-two-f",
    "tilde~and-dash_under.score",
    "eq=amp&q?hash#semi;colon,comma",
    "brackets[]{}()!$'*",
    " leading and trailing ",
]


# --- helpers ------------------------------------------------------------------------------------------


class _Captured(Exception):
    """Raised from botocore's before-send hook so nothing goes on the wire."""


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def head_from(method: str, url: str, headers: Any) -> RequestHead:
    """The RequestHead the listener would build for what botocore put on the wire."""
    parts = urlsplit(url)
    pairs = [(k, _text(v)) for k, v in headers.items()]
    if not any(k.lower() == "host" for k, _ in pairs):
        pairs.append(("Host", parts.netloc))
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return RequestHead.build(method, target, pairs)


@pytest.fixture
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    def fixed(remove_tzinfo: bool = True) -> datetime:
        return NOW.replace(tzinfo=None) if remove_tzinfo else NOW

    monkeypatch.setattr(botocore.auth, "get_current_datetime", fixed)
    monkeypatch.setattr(botocore.crt.auth, "get_current_datetime", fixed)


# With awscrt installed (as here, and for most users) botocore signs with the CRT; without it, with its
# pure-Python signer. Clients are tested with both.
@pytest.fixture(params=["crt", "python"])
def make_client(
    request: pytest.FixtureRequest, frozen_botocore: None, monkeypatch: pytest.MonkeyPatch
) -> Any:
    if request.param == "python":
        monkeypatch.setitem(botocore.auth.AUTH_TYPE_MAPS, "s3v4", S3SigV4Auth)
        monkeypatch.setitem(botocore.auth.AUTH_TYPE_MAPS, "s3v4-query", S3SigV4QueryAuth)
    else:
        assert botocore.auth.AUTH_TYPE_MAPS["s3v4"] is botocore.crt.auth.CrtS3SigV4Auth
    return _client


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client()


def _client(token: str | None = None, endpoint: str = ENDPOINT) -> Any:
    return botocore.session.get_session().create_client(
        "s3",
        region_name="eu-west-3",
        endpoint_url=endpoint,
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        aws_session_token=token,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )


def capture(client: Any, operation: str, **params: Any) -> Any:
    """Run a botocore operation up to the wire and return the prepared (signed) request."""
    seen: list[Any] = []

    def hook(request: Any, **_: Any) -> None:
        seen.append(request)
        raise _Captured

    client.meta.events.register("before-send.s3", hook)
    try:
        getattr(client, operation)(**params)
    except _Captured:
        pass
    finally:
        client.meta.events.unregister("before-send.s3", hook)
    (request,) = seen
    return request


def verify_head(head: RequestHead, now: datetime = NOW, secret: str = SECRET, **kw: Any) -> bytes:
    return sigv4.verify(head, sigv4.parse_auth(head), secret, now, **kw)


def with_header(head: RequestHead, name: str, value: str, *, replace: bool = True) -> RequestHead:
    pairs = [(k, v) for k, v in head.headers.items() if not (replace and k.lower() == name.lower())]
    pairs.append((name, value))
    return RequestHead.build(
        head.method, head.raw_path + (f"?{head.raw_query}" if head.raw_query else ""), pairs
    )


def with_target(head: RequestHead, target: str) -> RequestHead:
    return RequestHead.build(head.method, target, list(head.headers.items()))


def assert_s3_error(code: str, fn: Any, *args: Any, **kw: Any) -> S3Error:
    with pytest.raises(S3Error) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value
    return info.value


# --- AWS's documented examples ------------------------------------------------------------------------

DOC_TIME = datetime(2013, 5, 24, tzinfo=UTC)
DOC_GET_CANONICAL = (
    "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
    "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)
DOC_GET_SIGNATURE = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def doc_get_head(signature: str = DOC_GET_SIGNATURE) -> RequestHead:
    return RequestHead.build(
        "GET",
        "/test.txt",
        [
            ("Host", "examplebucket.s3.amazonaws.com"),
            (
                "Authorization",
                f"AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request,"
                f"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature={signature}",
            ),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ],
    )


def test_documented_get_object_example_canonical_request_and_string_to_sign() -> None:
    head = doc_get_head()
    signed = sigv4.parse_auth(head)
    canonical = sigv4.canonical_request(head, signed, head.host)
    assert canonical == DOC_GET_CANONICAL
    assert sigv4.string_to_sign(signed, canonical) == (
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )


def test_documented_get_object_example_verifies() -> None:
    head = doc_get_head()
    key = verify_head(head, now=DOC_TIME)
    assert key == sigv4.signing_key(SECRET, "20130524", "us-east-1")


def test_documented_get_object_example_with_wrong_signature_is_rejected() -> None:
    wrong = DOC_GET_SIGNATURE[:-1] + ("0" if DOC_GET_SIGNATURE[-1] != "0" else "1")
    assert_s3_error("SignatureDoesNotMatch", verify_head, doc_get_head(wrong), now=DOC_TIME)


def test_sign_reproduces_documented_get_object_signature() -> None:
    added = sigv4.sign(
        "GET",
        "/test.txt",
        [],
        {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9"},
        sigv4.EMPTY_SHA256,
        access_key_id=AKID,
        secret=SECRET,
        session_token=None,
        region="us-east-1",
        now=DOC_TIME,
    )
    assert added["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature={DOC_GET_SIGNATURE}"
    )
    assert added["x-amz-date"] == "20130524T000000Z"
    assert added["x-amz-content-sha256"] == sigv4.EMPTY_SHA256
    assert "x-amz-security-token" not in added


DOC_PRESIGN_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
    "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)


def doc_presign_head() -> RequestHead:
    return RequestHead.build(
        "GET", f"/test.txt?{DOC_PRESIGN_QUERY}", [("Host", "examplebucket.s3.amazonaws.com")]
    )


def test_documented_presigned_url_example_verifies_within_its_lifetime() -> None:
    head = doc_presign_head()
    signed = sigv4.parse_auth(head)
    assert signed.presigned and signed.expires_seconds == 86400
    assert signed.payload_hash == sigv4.UNSIGNED_PAYLOAD
    sigv4.verify(head, signed, SECRET, DOC_TIME + timedelta(hours=23))


def test_documented_presigned_url_example_expires_after_x_amz_expires() -> None:
    err = assert_s3_error(
        "AccessDenied", verify_head, doc_presign_head(), now=DOC_TIME + timedelta(seconds=86401)
    )
    assert err.message == "Request has expired"


# --- cross-checks with botocore: header auth ----------------------------------------------------------


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_botocore_get_object_with_awkward_key_verifies(client: Any, key: str) -> None:
    req = capture(client, "get_object", Bucket="bucket", Key=key, Range="bytes=0-9")
    head = head_from(req.method, req.url, req.headers)
    assert verify_head(head) == sigv4.signing_key(SECRET, NOW.strftime("%Y%m%d"), "eu-west-3")


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_botocore_put_object_over_plain_http_verifies(make_client: Any, key: str) -> None:
    client = make_client(endpoint="http://127.0.0.1:9000")
    req = capture(client, "put_object", Bucket="bucket", Key=key, Body=b"payload", Metadata={"note": "a  b"})
    head = head_from(req.method, req.url, req.headers)
    signed = sigv4.parse_auth(head)
    assert signed.payload_hash == hashlib.sha256(b"payload").hexdigest()
    sigv4.verify(head, signed, SECRET, NOW)


def test_botocore_streaming_put_over_https_verifies_with_trailer_sentinel(client: Any) -> None:
    req = capture(client, "put_object", Bucket="bucket", Key="k", Body=b"hello world")
    head = head_from(req.method, req.url, req.headers)
    signed = sigv4.parse_auth(head)
    assert signed.payload_hash == sigv4.STREAMING_UNSIGNED_TRAILER
    sigv4.verify(head, signed, SECRET, NOW)


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("list_objects_v2", {"Bucket": "bucket", "Prefix": "p q=r&s+t/ü", "Delimiter": "/", "MaxKeys": 7}),
        ("list_objects", {"Bucket": "bucket", "Marker": "a=b", "Prefix": "~x"}),
        ("create_multipart_upload", {"Bucket": "bucket", "Key": "a b/c"}),  # ?uploads: empty value
        ("upload_part", {"Bucket": "bucket", "Key": "k", "UploadId": "id+/=", "PartNumber": 3, "Body": b"x"}),
        ("list_parts", {"Bucket": "bucket", "Key": "k", "UploadId": "u p"}),
        ("head_object", {"Bucket": "bucket", "Key": "x//y", "VersionId": "v=1"}),
        ("delete_objects", {"Bucket": "bucket", "Delete": {"Objects": [{"Key": "a"}, {"Key": "b c"}]}}),
        ("copy_object", {"Bucket": "bucket", "Key": "dst", "CopySource": {"Bucket": "src", "Key": "a b+c"}}),
        ("list_buckets", {}),
        (
            "get_object",
            {"Bucket": "bucket", "Key": "k", "ResponseContentDisposition": 'attachment; f="a=b c"'},
        ),
    ],
)
def test_botocore_operations_with_query_strings_verify(client: Any, operation: str, params: Any) -> None:
    req = capture(client, operation, **params)
    verify_head(head_from(req.method, req.url, req.headers))


def test_botocore_request_with_session_token_verifies_and_records_token(make_client: Any) -> None:
    req = capture(make_client(token=TOKEN), "get_object", Bucket="bucket", Key="k")
    head = head_from(req.method, req.url, req.headers)
    signed = sigv4.parse_auth(head)
    assert signed.security_token == TOKEN
    assert "x-amz-security-token" in signed.signed_headers
    sigv4.verify(head, signed, SECRET, NOW)


def _low_level(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> RequestHead:
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=b"")
    S3SigV4Auth(Credentials(AKID, SECRET), "s3", "us-east-1").add_auth(request)
    return head_from(method, request.url, request.headers)


@pytest.mark.parametrize(
    "query",
    [
        [("b", "2"), ("a", "2"), ("a", "1")],  # repeated names, sorted by value
        [("uploads", "")],
        [("a", "x=y"), ("a-b", "1"), ("a_b", "2")],  # '=' in a value; names sharing a prefix
        [("prefix", "a b+c/ü~*")],
        [("z", "1"), ("ä", "1"), ("Z", "0")],  # sorting happens on the encoded names
    ],
)
def test_botocore_low_level_signer_query_edge_cases_verify(frozen_botocore: None, query: list[Any]) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k?{percent_encode_sequence(query)}")
    assert list(head.query) == query
    verify_head(head)


# --- tampering ----------------------------------------------------------------------------------------


@pytest.fixture
def signed_put(make_client: Any) -> RequestHead:
    client = make_client(endpoint="http://127.0.0.1:9000")
    req = capture(
        client,
        "put_object",
        Bucket="bucket",
        Key="dir/obj key",
        Body=b"payload",
        ContentType="text/plain",
        Metadata={"owner": "alice"},
    )
    head = head_from(req.method, req.url, req.headers)
    verify_head(head)
    return head


def test_tampered_signature_is_rejected(signed_put: RequestHead) -> None:
    auth = signed_put.headers["Authorization"]
    flipped = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_header(signed_put, "Authorization", flipped))


def test_tampered_path_is_rejected(signed_put: RequestHead) -> None:
    head = with_target(signed_put, signed_put.raw_path.replace("obj", "obk"))
    assert_s3_error("SignatureDoesNotMatch", verify_head, head)


def test_tampered_query_value_is_rejected(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket?list-type=2&prefix=public%2F")
    verify_head(head)
    assert_s3_error(
        "SignatureDoesNotMatch", verify_head, with_target(head, "/bucket?list-type=2&prefix=secret%2F")
    )


def test_added_query_parameter_is_rejected(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k")
    verify_head(head)
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_target(head, "/bucket/k?versionId=old"))


def test_double_slash_is_not_normalised(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/a//b")
    verify_head(head)
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_target(head, "/bucket/a/b"))


def test_percent_encoding_is_not_normalised(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/a%2Fb")
    verify_head(head)
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_target(head, "/bucket/a/b"))


def test_tampered_signed_header_is_rejected(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k", {"Range": "bytes=0-9", "x-amz-meta-a": "1"})
    verify_head(head)
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_header(head, "Range", "bytes=0-99"))
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_header(head, "x-amz-meta-a", "2"))


def test_header_whitespace_is_canonicalised_not_rejected(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k", {"x-amz-meta-a": "one  two"})
    verify_head(with_header(head, "x-amz-meta-a", "  one    two "))


def test_repeated_signed_header_values_are_joined_with_commas(frozen_botocore: None) -> None:
    # botocore joins repeated headers with ','; a proxy seeing them as two lines must agree.
    head = _low_level(f"{ENDPOINT}/bucket/k", {"x-amz-meta-a": "1,2"})
    verify_head(with_header(with_header(head, "x-amz-meta-a", "1"), "x-amz-meta-a", "2", replace=False))


def test_unsigned_amz_header_is_rejected_as_smuggling(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/dst", method="PUT")
    verify_head(head)
    smuggled = with_header(head, "x-amz-copy-source", "/other-bucket/secret")
    err = assert_s3_error("AccessDenied", verify_head, smuggled)
    assert err.message == "There were headers present in the request which were not signed"


def test_unsigned_session_token_header_is_rejected(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k")
    assert_s3_error("AccessDenied", verify_head, with_header(head, "X-Amz-Security-Token", TOKEN))


def test_unsigned_non_amz_header_is_allowed(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k")
    verify_head(with_header(head, "User-Agent", "something else"))


def test_wrong_secret_is_rejected(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k")
    assert_s3_error("SignatureDoesNotMatch", verify_head, head, secret=SECRET + "x")


def test_forwarded_host_is_used_when_given(frozen_botocore: None) -> None:
    head = _low_level("https://public.example.com/bucket/k")
    behind_lb = with_header(head, "Host", "10.0.0.7:8080")
    assert_s3_error("SignatureDoesNotMatch", verify_head, behind_lb)
    verify_head(behind_lb, host="public.example.com")


# --- time ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [timedelta(minutes=15), -timedelta(minutes=15), timedelta(0)])
def test_header_auth_within_fifteen_minutes_is_accepted(frozen_botocore: None, offset: timedelta) -> None:
    verify_head(_low_level(f"{ENDPOINT}/bucket/k"), now=NOW + offset)


@pytest.mark.parametrize("offset", [timedelta(minutes=15, seconds=1), -timedelta(minutes=15, seconds=1)])
def test_header_auth_outside_fifteen_minutes_is_too_skewed(frozen_botocore: None, offset: timedelta) -> None:
    assert_s3_error("RequestTimeTooSkewed", verify_head, _low_level(f"{ENDPOINT}/bucket/k"), now=NOW + offset)


def test_credential_scope_date_must_match_request_date(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k")
    auth = head.headers["Authorization"].replace(f"/{NOW:%Y%m%d}/", "/20261123/")
    assert_s3_error("AuthorizationHeaderMalformed", verify_head, with_header(head, "Authorization", auth))


def test_date_header_without_x_amz_date_verifies(frozen_botocore: None) -> None:
    # botocore keeps a caller's Date header (RFC 1123 with "-0000") and then sends no X-Amz-Date.
    head = _low_level(f"{ENDPOINT}/bucket/k", headers={"Date": "anything"})
    assert "x-amz-date" not in head.headers
    assert head.headers["Date"] == f"{NOW:%a, %d %b %Y %H:%M:%S} -0000"
    verify_head(head)


def test_date_header_is_checked_for_skew(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k", headers={"Date": "anything"})
    assert_s3_error("RequestTimeTooSkewed", verify_head, head, now=NOW + timedelta(minutes=16))


def test_tampered_date_header_is_rejected(frozen_botocore: None) -> None:
    head = _low_level(f"{ENDPOINT}/bucket/k", headers={"Date": "anything"})
    later = f"{NOW + timedelta(seconds=1):%a, %d %b %Y %H:%M:%S} -0000"
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_header(head, "Date", later))


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Fri, 04 Dec 2026 17:44:06 -0000", "20261204T174406Z"),
        ("Fri, 04 Dec 2026 17:44:06 GMT", "20261204T174406Z"),
        ("Fri, 04 Dec 2026 18:44:06 +0100", "20261204T174406Z"),
        ("Sat, 05 Dec 2026 00:14:06 +0630", "20261204T174406Z"),
    ],
)
def test_http_date_becomes_the_signing_timestamp_in_utc(date: str, expected: str) -> None:
    amz_date, moment = sigv4.header_request_date(None, date)
    assert amz_date == expected
    assert moment == datetime(2026, 12, 4, 17, 44, 6, tzinfo=UTC)


def test_x_amz_date_wins_over_date() -> None:
    amz_date, _ = sigv4.header_request_date("20261204T000000Z", "Fri, 04 Dec 2026 17:44:06 -0000")
    assert amz_date == "20261204T000000Z"


@pytest.mark.parametrize("date", [None, "", "yesterday", "Fri, 99 Dec 2026 17:44:06 GMT", "20261204T174406Z"])
def test_no_valid_date_is_refused(date: str | None) -> None:
    assert_s3_error("AccessDenied", sigv4.header_request_date, None, date)


# --- presigned URLs -----------------------------------------------------------------------------------


def presigned_head(
    client: Any, operation: str = "get_object", expires: int = 3600, headers: Any = (), **params: Any
) -> RequestHead:
    url = client.generate_presigned_url(operation, Params=params, ExpiresIn=expires)
    return head_from("PUT" if operation.startswith("put") else "GET", url, dict(headers))


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_botocore_presigned_get_with_awkward_key_verifies(client: Any, key: str) -> None:
    head = presigned_head(client, Bucket="bucket", Key=key, ResponseContentDisposition='inline; f="x=y z"')
    signed = sigv4.parse_auth(head)
    assert signed.presigned and signed.payload_hash == sigv4.UNSIGNED_PAYLOAD
    verify_head(head)


def test_botocore_presigned_put_verifies(client: Any) -> None:
    verify_head(presigned_head(client, "put_object", Bucket="bucket", Key="up load+1"))


def test_presigned_url_is_valid_until_expiry_and_not_after(client: Any) -> None:
    head = presigned_head(client, expires=600, Bucket="bucket", Key="k")
    verify_head(head, now=NOW + timedelta(seconds=600))
    err = assert_s3_error("AccessDenied", verify_head, head, now=NOW + timedelta(seconds=601))
    assert err.message == "Request has expired"


def test_presigned_url_from_the_future_is_not_valid_yet(client: Any) -> None:
    head = presigned_head(client, Bucket="bucket", Key="k")
    verify_head(head, now=NOW - timedelta(minutes=15))
    err = assert_s3_error("AccessDenied", verify_head, head, now=NOW - timedelta(minutes=16))
    assert err.message == "Request is not valid yet"


@pytest.mark.parametrize("expires", ["604801", "0", "-5", "abc", "1.5", ""])
def test_presign_with_invalid_expires_is_rejected(expires: str) -> None:
    query = DOC_PRESIGN_QUERY.replace("X-Amz-Expires=86400", f"X-Amz-Expires={expires}")
    head = RequestHead.build("GET", f"/test.txt?{query}", [("Host", "examplebucket.s3.amazonaws.com")])
    assert_s3_error("AuthorizationQueryParametersError", sigv4.parse_auth, head)


def test_presign_with_maximum_expires_is_accepted(client: Any) -> None:
    head = presigned_head(client, expires=604800, Bucket="bucket", Key="k")
    verify_head(head, now=NOW + timedelta(days=7))


def test_presigned_tampered_query_is_rejected(client: Any) -> None:
    head = presigned_head(client, Bucket="bucket", Key="k")
    target = f"{head.raw_path}?{head.raw_query}&response-content-type=text%2Fhtml"
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_target(head, target))


def test_presigned_tampered_key_is_rejected(client: Any) -> None:
    head = presigned_head(client, Bucket="bucket", Key="public/k")
    target = f"{head.raw_path.replace('public', 'secret')}?{head.raw_query}"
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_target(head, target))


def test_presigned_extended_expiry_is_rejected(client: Any) -> None:
    head = presigned_head(client, expires=60, Bucket="bucket", Key="k")
    target = f"{head.raw_path}?{head.raw_query.replace('X-Amz-Expires=60', 'X-Amz-Expires=6000')}"
    assert_s3_error(
        "SignatureDoesNotMatch", verify_head, with_target(head, target), now=NOW + timedelta(minutes=5)
    )


def test_presigned_with_session_token_carries_and_signs_it(make_client: Any) -> None:
    head = presigned_head(make_client(token=TOKEN), Bucket="bucket", Key="k")
    signed = sigv4.parse_auth(head)
    assert signed.security_token == TOKEN
    verify_head(head)
    forged = head.raw_query.replace("X-Amz-Security-Token=", "X-Amz-Security-Token=x")
    assert_s3_error("SignatureDoesNotMatch", verify_head, with_target(head, f"{head.raw_path}?{forged}"))


def test_presigned_request_with_unsigned_amz_header_is_rejected(client: Any) -> None:
    head = presigned_head(client, "put_object", Bucket="bucket", Key="k")
    assert_s3_error("AccessDenied", verify_head, with_header(head, "x-amz-acl", "public-read"))


def test_presigned_signature_is_excluded_only_once(client: Any) -> None:
    head = presigned_head(client, Bucket="bucket", Key="k")
    doubled = f"{head.raw_path}?{head.raw_query}&X-Amz-Signature={'0' * 64}"
    assert_s3_error("AuthorizationQueryParametersError", sigv4.parse_auth, with_target(head, doubled))


# --- parse errors -------------------------------------------------------------------------------------


def _auth_head(authorization: str | None, **extra: str) -> RequestHead:
    headers = [
        ("Host", HOST),
        ("x-amz-date", f"{NOW:%Y%m%dT%H%M%SZ}"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
    ]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    headers += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return RequestHead.build("GET", "/bucket/k", headers)


GOOD_AUTH = (
    f"AWS4-HMAC-SHA256 Credential={AKID}/{NOW:%Y%m%d}/us-east-1/s3/aws4_request, "
    f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={'a' * 64}"
)


def test_well_formed_header_parses_into_claims() -> None:
    signed = sigv4.parse_auth(_auth_head(GOOD_AUTH))
    assert signed.access_key_id == AKID
    assert signed.scope == f"{NOW:%Y%m%d}/us-east-1/s3/aws4_request"
    assert signed.signed_headers == ("host", "x-amz-content-sha256", "x-amz-date")
    assert signed.request_time == NOW
    assert not signed.presigned and signed.expires_seconds is None and signed.security_token is None


def test_anonymous_request_is_denied() -> None:
    err = assert_s3_error("AccessDenied", sigv4.parse_auth, _auth_head(None))
    assert err.message == "Anonymous access is not allowed"


def test_sigv2_header_is_refused() -> None:
    assert_s3_error("AccessDenied", sigv4.parse_auth, _auth_head(f"AWS {AKID}:c2lnbmF0dXJl"))


def test_sigv2_presigned_url_from_botocore_default_signer_is_refused(frozen_botocore: None) -> None:
    client = botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=ENDPOINT,
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    head = head_from("GET", url, {})
    if "X-Amz-Signature" in url:  # newer botocore presigns with SigV4 by default; force SigV2's shape
        head = with_target(head, "/b/k?AWSAccessKeyId=AKID&Signature=abc%3D&Expires=1796097538")
    assert_s3_error("AccessDenied", sigv4.parse_auth, head)


def test_sigv4a_is_not_implemented() -> None:
    auth = GOOD_AUTH.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")
    assert_s3_error("NotImplemented", sigv4.parse_auth, _auth_head(auth))
    head = RequestHead.build(
        "GET",
        f"/k?{DOC_PRESIGN_QUERY.replace('AWS4-HMAC-SHA256', 'AWS4-ECDSA-P256-SHA256')}",
        [("Host", HOST)],
    )
    assert_s3_error("NotImplemented", sigv4.parse_auth, head)


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=x",
        GOOD_AUTH.replace(", Signature=", ", Sig="),
        GOOD_AUTH + ", Extra=1",
        GOOD_AUTH.replace("Signature=" + "a" * 64, "Signature=" + "a" * 63),
        GOOD_AUTH.replace("Signature=" + "a" * 64, "Signature=" + "g" * 64),
        GOOD_AUTH.replace("/aws4_request", "/aws5_request"),
        GOOD_AUTH.replace(f"{AKID}/", ""),
        GOOD_AUTH.replace(f"/{NOW:%Y%m%d}/", "/2026-11-24/"),
        GOOD_AUTH.replace("/us-east-1/", "//"),
        GOOD_AUTH.replace("/s3/", "/sts/"),
        GOOD_AUTH.replace("host;x-amz", "host;;x-amz"),
        GOOD_AUTH.replace("SignedHeaders=", "SignedHeaders=host,SignedHeaders="),
    ],
)
def test_malformed_authorization_header_is_rejected(authorization: str) -> None:
    assert_s3_error("AuthorizationHeaderMalformed", sigv4.parse_auth, _auth_head(authorization))


def test_unknown_authorization_scheme_is_rejected() -> None:
    assert_s3_error("InvalidArgument", sigv4.parse_auth, _auth_head("Bearer abc"))


def test_header_and_query_auth_together_are_rejected() -> None:
    head = RequestHead.build(
        "GET", f"/test.txt?{DOC_PRESIGN_QUERY}", [("Host", HOST), ("Authorization", GOOD_AUTH)]
    )
    assert_s3_error("InvalidArgument", sigv4.parse_auth, head)


def test_header_auth_requires_content_sha256() -> None:
    head = RequestHead.build(
        "GET",
        "/bucket/k",
        [("Host", HOST), ("x-amz-date", f"{NOW:%Y%m%dT%H%M%SZ}"), ("Authorization", GOOD_AUTH)],
    )
    err = assert_s3_error("InvalidRequest", sigv4.parse_auth, head)
    assert "x-amz-content-sha256" in err.message


@pytest.mark.parametrize(
    "value", ["abc", "g" * 64, "a" * 63, "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "unsigned-payload"]
)
def test_invalid_content_sha256_is_rejected(value: str) -> None:
    head = RequestHead.build(
        "GET",
        "/bucket/k",
        [
            ("Host", HOST),
            ("x-amz-date", f"{NOW:%Y%m%dT%H%M%SZ}"),
            ("x-amz-content-sha256", value),
            ("Authorization", GOOD_AUTH),
        ],
    )
    assert_s3_error("InvalidArgument", sigv4.parse_auth, head)


@pytest.mark.parametrize(
    "value", ["a" * 64, "A" * 64, *sorted(sigv4.STREAMING_MODES), sigv4.UNSIGNED_PAYLOAD]
)
def test_valid_content_sha256_values_are_accepted(value: str) -> None:
    head = with_header(_auth_head(GOOD_AUTH), "x-amz-content-sha256", value)
    assert sigv4.parse_auth(head).payload_hash == value


@pytest.mark.parametrize(
    "date",
    [None, "", "20261124", "20261124T034500", "2026-11-24T03:45:00Z", "20261324T034500Z", "20261124T250000Z"],
)
def test_missing_or_unparseable_date_is_denied(date: str | None) -> None:
    headers = [("Host", HOST), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"), ("Authorization", GOOD_AUTH)]
    if date is not None:
        headers.append(("x-amz-date", date))
    assert_s3_error("AccessDenied", sigv4.parse_auth, RequestHead.build("GET", "/bucket/k", headers))


def test_missing_presign_parameter_is_rejected() -> None:
    query = DOC_PRESIGN_QUERY.replace("&X-Amz-SignedHeaders=host", "")
    head = RequestHead.build("GET", f"/test.txt?{query}", [("Host", HOST)])
    assert_s3_error("AuthorizationQueryParametersError", sigv4.parse_auth, head)


def test_presign_with_wrong_service_is_rejected() -> None:
    query = DOC_PRESIGN_QUERY.replace("%2Fs3%2F", "%2Fec2%2F")
    head = RequestHead.build("GET", f"/test.txt?{query}", [("Host", HOST)])
    assert_s3_error("AuthorizationQueryParametersError", sigv4.parse_auth, head)


def test_host_must_be_signed() -> None:
    auth = GOOD_AUTH.replace("SignedHeaders=host;", "SignedHeaders=")
    assert_s3_error("AuthorizationHeaderMalformed", verify_head, _auth_head(auth))


# --- sign() -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signer", [S3SigV4Auth, botocore.crt.auth.CrtS3SigV4Auth])
@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/bucket/with%20space/and%2Bplus%40at", []),
        ("/bucket/double//slash", [("versionId", "v=1/2")]),
        ("/bucket", [("list-type", "2"), ("prefix", "ü p"), ("delimiter", "/")]),
        ("/bucket/k", [("uploads", "")]),
        ("/", []),
    ],
)
def test_sign_matches_botocore_and_verifies(
    frozen_botocore: None, signer: Any, token: str | None, path: str, query: list[Any]
) -> None:
    headers = {
        "host": "bucket.s3.eu-west-3.amazonaws.com",
        "content-type": "text/plain",
        "x-amz-meta-n": " a  b ",
    }
    body = b"some body"
    payload_hash = hashlib.sha256(body).hexdigest()
    url = f"https://{headers['host']}{path}" + (f"?{percent_encode_sequence(query)}" if query else "")
    reference = AWSRequest(method="PUT", url=url, headers=dict(headers), data=body)
    signer(Credentials(AKID, SECRET, token), "s3", "eu-west-3").add_auth(reference)

    added = sigv4.sign(
        "PUT",
        path,
        query,
        headers,
        payload_hash,
        access_key_id=AKID,
        secret=SECRET,
        session_token=token,
        region="eu-west-3",
        now=NOW,
    )
    assert added["Authorization"] == reference.headers["Authorization"]
    assert added["x-amz-date"] == reference.headers["X-Amz-Date"]
    assert added.get("x-amz-security-token") == token

    head = head_from("PUT", url, {**headers, **added})
    assert verify_head(head) == sigv4.signing_key(SECRET, f"{NOW:%Y%m%d}", "eu-west-3")


def test_sign_output_changes_with_any_input() -> None:
    base: dict[str, Any] = {
        "method": "GET",
        "path": "/b/k",
        "query": [],
        "headers": {"host": "h"},
        "payload_hash": sigv4.UNSIGNED_PAYLOAD,
    }
    creds: dict[str, Any] = {
        "access_key_id": AKID,
        "secret": SECRET,
        "session_token": None,
        "region": "us-east-1",
        "now": NOW,
    }
    reference = sigv4.sign(**base, **creds)["Authorization"]
    variants = [
        {**base, "method": "PUT"},
        {**base, "path": "/b/k2"},
        {**base, "query": [("a", "")]},
        {**base, "headers": {"host": "h2"}},
        {**base, "payload_hash": sigv4.EMPTY_SHA256},
    ]
    for variant in variants:
        assert sigv4.sign(**variant, **creds)["Authorization"] != reference
    assert sigv4.sign(**base, **{**creds, "now": NOW + timedelta(seconds=1)})["Authorization"] != reference


def _sign_get(now: datetime) -> dict[str, str]:
    return sigv4.sign(
        "GET",
        "/b/k",
        [],
        {"host": "h"},
        sigv4.UNSIGNED_PAYLOAD,
        access_key_id=AKID,
        secret=SECRET,
        session_token=None,
        region="us-east-1",
        now=now,
    )


@pytest.mark.parametrize(
    "now",
    [
        NOW.astimezone(timezone(timedelta(hours=5, minutes=30))),  # any zone: the same instant
        NOW.astimezone(timezone(timedelta(hours=-8))),
        NOW + timedelta(microseconds=999_999),  # x-amz-date is to the second, truncated
    ],
)
def test_sign_dates_the_request_in_utc_to_the_second(now: datetime) -> None:
    assert _sign_get(now) == _sign_get(NOW)
    assert _sign_get(now)["x-amz-date"] == "20261124T034500Z"


def test_sign_date_changes_at_each_second_and_day() -> None:
    assert _sign_get(NOW - timedelta(microseconds=1))["x-amz-date"] == "20261124T034459Z"
    midnight = datetime(2026, 11, 25, tzinfo=UTC)
    assert _sign_get(midnight - timedelta(seconds=1))["x-amz-date"] == "20261124T235959Z"
    assert _sign_get(midnight)["x-amz-date"] == "20261125T000000Z"


def test_sign_rejects_naive_time() -> None:
    with pytest.raises(ValueError):
        _sign_get(NOW.replace(tzinfo=None))


# --- the caches of derived keys -------------------------------------------------------------------------


def test_signing_key_differs_with_secret_date_region_and_service() -> None:
    reference = sigv4.signing_key(SECRET, "20261124", "us-east-1", "s3")
    assert sigv4.signing_key(SECRET, "20261124", "us-east-1", "s3") == reference
    for other in [
        sigv4.signing_key(SECRET + "x", "20261124", "us-east-1", "s3"),
        sigv4.signing_key(SECRET, "20261125", "us-east-1", "s3"),
        sigv4.signing_key(SECRET, "20261124", "eu-west-3", "s3"),
        sigv4.signing_key(SECRET, "20261124", "us-east-1", "sts"),
    ]:
        assert len(other) == 32 and other != reference


def test_signing_key_matches_an_uncached_derivation() -> None:
    key = hmac.new(f"AWS4{SECRET}".encode(), b"20261124", hashlib.sha256).digest()
    for part in (b"eu-west-3", b"s3", b"aws4_request"):
        key = hmac.new(key, part, hashlib.sha256).digest()
    assert sigv4.signing_key(SECRET, "20261124", "eu-west-3", "s3") == key


def test_signing_key_cache_is_bounded() -> None:
    maxsize = sigv4.signing_key.cache_info().maxsize
    assert maxsize is not None
    for i in range(maxsize + 50):
        sigv4.signing_key(f"secret-{i}", "20261124", "us-east-1", "s3")
    assert sigv4.signing_key.cache_info().currsize == maxsize


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=130), st.text(max_size=300))
def test_signature_is_hmac_sha256(key: bytes, text: str) -> None:
    data = text.encode("utf-8", "surrogateescape")
    assert sigv4._signature(key, text) == hmac.new(key, data, hashlib.sha256).hexdigest()


def test_sign_requires_host() -> None:
    with pytest.raises(ValueError):
        sigv4.sign(
            "GET",
            "/",
            [],
            {},
            sigv4.UNSIGNED_PAYLOAD,
            access_key_id=AKID,
            secret=SECRET,
            session_token=None,
            region="r",
            now=NOW,
        )


# --- encoding helpers, against botocore ---------------------------------------------------------------

_reference_signer = SigV4Auth(Credentials(AKID, SECRET), "s3", "us-east-1")
_query_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_query_text, _query_text), max_size=6))
def test_canonical_query_matches_botocore(pairs: list[tuple[str, str]]) -> None:
    assert sigv4.canonical_query(pairs) == _reference_signer._canonical_query_string_params(pairs)


@settings(max_examples=300, deadline=None)
@given(_query_text)
def test_uri_encode_keeps_only_unreserved_characters(text: str) -> None:
    encoded = sigv4.uri_encode(text, keep_slash=False)
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%")
    assert sigv4.uri_encode(text, keep_slash=True) == encoded.replace("%2F", "/")
    assert all(
        encoded[i + 1 : i + 3].upper() == encoded[i + 1 : i + 3] for i, c in enumerate(encoded) if c == "%"
    )


_encode_text = st.one_of(
    st.text(st.sampled_from("a~/%+ =é日\U0001f600\x00-._Z9"), max_size=40),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
)


@settings(max_examples=500, deadline=None)
@given(_encode_text, st.booleans())
def test_uri_encode_equals_strict_utf8_quote(text: str, keep_slash: bool) -> None:
    expected = quote(text, safe="/" if keep_slash else "", encoding="utf-8", errors="strict")
    assert sigv4.uri_encode(text, keep_slash=keep_slash) == expected


@pytest.mark.parametrize("text", ["\ud800", "a/b\udcff", "%\ud800/"])
def test_uri_encode_refuses_lone_surrogates(text: str) -> None:
    with pytest.raises(S3Error) as err:
        sigv4.uri_encode(text, keep_slash=True)
    assert err.value.code == "InvalidArgument"


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40))
def test_any_key_signed_by_botocore_verifies(key: str) -> None:
    request = AWSRequest(
        method="GET", url=f"{ENDPOINT}/bucket/{percent_encode_key(key)}", headers={}, data=b""
    )
    S3SigV4Auth(Credentials(AKID, SECRET), "s3", "us-east-1").add_auth(request)
    head = head_from("GET", request.url, request.headers)
    signed = sigv4.parse_auth(head)
    sigv4.verify(head, signed, SECRET, signed.request_time)


def percent_encode_key(key: str) -> str:
    # What botocore's REST serializer does for an S3 key in the path.
    return percent_encode(key, safe="/~")


def test_presign_low_level_signer_verifies(frozen_botocore: None) -> None:
    request = AWSRequest(method="GET", url=f"{ENDPOINT}/bucket/a%20b?versionId=1&x=%3D", headers={}, data=b"")
    S3SigV4QueryAuth(Credentials(AKID, SECRET, TOKEN), "s3", "us-east-1", expires=900).add_auth(request)
    head = head_from("GET", request.url, {})
    signed = sigv4.parse_auth(head)
    assert signed.expires_seconds == 900 and signed.security_token == TOKEN
    sigv4.verify(head, signed, SECRET, NOW)
