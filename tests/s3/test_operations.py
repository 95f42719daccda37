"""classify() against requests botocore itself builds, path style and virtual-hosted, plus hostile shapes."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore import xform_name
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config
from botocore.model import Shape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.access.grants import Action, Overwrite, Scope, Target
from proxy.errors import S3Error
from proxy.s3.addressing import validate_key
from proxy.s3.operations import _RULES, UNKNOWN, Operation, classify
from proxy.s3.request import RequestHead

BASE = "s3.test.local"
ENDPOINT = f"http://{BASE}:9000"
B = "data-bucket"
K = "models/llama 3/ünï+code~(x).bin"
SRC_B = "src-bucket"
SRC_K = "raw/a b+c%d.bin"
STYLES = ("path", "virtual")


class _Captured(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__("captured")
        self.request = request


def _stop_before_send(request: AWSPreparedRequest, **_: Any) -> None:
    raise _Captured(request)


def _client(style: str, token: str | None = None) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",
        aws_session_token=token,
        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1}, signature_version="s3v4"),
    )
    client.meta.events.register("before-send.s3", _stop_before_send)
    return client


_CLIENTS = {style: _client(style) for style in STYLES}


def _head(method: str, url: str, headers: list[tuple[str, str]]) -> RequestHead:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return RequestHead.build(method, target, [*headers, ("Host", parts.netloc)])


def botocore_head(style: str, operation: str, **params: Any) -> RequestHead:
    """The request botocore would send for `operation`, as the listener would see it."""
    try:
        getattr(_CLIENTS[style], operation)(**params)
    except _Captured as captured:
        request = captured.request
        headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()]
        return _head(request.method, request.url, headers)
    raise AssertionError(f"{operation} sent nothing")


def presigned_head(style: str, operation: str, method: str, **params: Any) -> RequestHead:
    url = _client(style, token="session-token").generate_presigned_url(operation, Params=params)
    return _head(method, url, [])


def classify_boto(style: str, operation: str, **params: Any) -> Operation:
    return classify(botocore_head(style, operation, **params), virtual_host_base=BASE)


def raw(
    method: str, target: str, headers: list[tuple[str, str]] | None = None, host: str = f"{BASE}:9000"
) -> Operation:
    return classify(
        RequestHead.build(method, target, [("Host", host), *(headers or [])]), virtual_host_base=BASE
    )


def read(bucket: str, key: str) -> Target:
    return Target(Action.READ, bucket, key, Scope.OBJECT)


def write(bucket: str, key: str, overwrite: Overwrite = Overwrite.GUARDABLE) -> Target:
    """A write that makes an object under its key (PUT, copy, completion)."""
    return Target(Action.WRITE, bucket, key, Scope.OBJECT, overwrite)


def part(bucket: str, key: str) -> Target:
    """A write that never replaces an object (starting, uploading or aborting a multipart upload)."""
    return Target(Action.WRITE, bucket, key, Scope.OBJECT, Overwrite.NEVER)


def admin_object(bucket: str, key: str) -> Target:
    return Target(Action.ADMIN, bucket, key, Scope.OBJECT)


def admin_bucket(bucket: str) -> Target:
    return Target(Action.ADMIN, bucket, "", Scope.PREFIX)


def listing(bucket: str, prefix: str) -> Target:
    return Target(Action.LIST, bucket, prefix, Scope.PREFIX)


def bucket_meta(bucket: str) -> Target:
    return Target(Action.LIST, bucket, "", Scope.BUCKET)


# (botocore method, its parameters, expected S3 operation, expected targets)
DATA_PLANE: list[tuple[str, dict[str, Any], str, tuple[Target, ...]]] = [
    ("get_object", {"Bucket": B, "Key": K}, "GetObject", (read(B, K),)),
    (
        "get_object",
        {
            "Bucket": B,
            "Key": K,
            "VersionId": "3/L4kqtJl+cpXroDTDmJ",
            "PartNumber": 2,
            "Range": "bytes=0-99",
            "IfNoneMatch": '"etag"',
            "ResponseContentType": "text/plain",
            "ResponseContentDisposition": "attachment; filename=x",
            "ResponseCacheControl": "no-cache",
            "ResponseExpires": datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
            "ChecksumMode": "ENABLED",
        },
        "GetObject",
        (read(B, K),),
    ),
    ("head_object", {"Bucket": B, "Key": K}, "HeadObject", (read(B, K),)),
    ("head_object", {"Bucket": B, "Key": K, "VersionId": "v1", "PartNumber": 1}, "HeadObject", (read(B, K),)),
    (
        "get_object_attributes",
        {"Bucket": B, "Key": K, "ObjectAttributes": ["ETag", "ObjectParts"], "MaxParts": 5},
        "GetObjectAttributes",
        (read(B, K),),
    ),
    (
        "select_object_content",
        {
            "Bucket": B,
            "Key": K,
            "Expression": "select * from s3object",
            "ExpressionType": "SQL",
            "InputSerialization": {"CSV": {}},
            "OutputSerialization": {"CSV": {}},
        },
        "SelectObjectContent",
        (read(B, K),),
    ),
    (
        "list_objects",
        {"Bucket": B, "Prefix": "models/llama", "Delimiter": "/", "Marker": "m", "MaxKeys": 5},
        "ListObjects",
        (listing(B, "models/llama"),),
    ),
    ("list_objects", {"Bucket": B, "EncodingType": "url"}, "ListObjects", (listing(B, ""),)),
    (
        "list_objects_v2",
        {
            "Bucket": B,
            "Prefix": "models/ü +x/",
            "Delimiter": "/",
            "ContinuationToken": "tok",
            "FetchOwner": True,
            "StartAfter": "models/a",
            "MaxKeys": 10,
            "EncodingType": "url",
        },
        "ListObjectsV2",
        (listing(B, "models/ü +x/"),),
    ),
    ("list_objects_v2", {"Bucket": B}, "ListObjectsV2", (listing(B, ""),)),
    (
        "list_object_versions",
        {"Bucket": B, "Prefix": "data/", "KeyMarker": "k", "VersionIdMarker": "v", "Delimiter": "/"},
        "ListObjectVersions",
        (listing(B, "data/"),),
    ),
    (
        "list_multipart_uploads",
        {"Bucket": B, "Prefix": "up/", "KeyMarker": "k", "UploadIdMarker": "u", "MaxUploads": 3},
        "ListMultipartUploads",
        (listing(B, "up/"),),
    ),
    (
        "list_parts",
        {"Bucket": B, "Key": K, "UploadId": "u-1", "MaxParts": 10, "PartNumberMarker": 2},
        "ListParts",
        (Target(Action.LIST, B, K, Scope.OBJECT),),
    ),
    ("put_object", {"Bucket": B, "Key": K, "Body": b"data"}, "PutObject", (write(B, K),)),
    (
        "put_object",
        {
            "Bucket": B,
            "Key": K,
            "Body": b"d",
            "ACL": "bucket-owner-full-control",
            "StorageClass": "STANDARD_IA",
        },
        "PutObject",
        (write(B, K),),
    ),
    ("create_multipart_upload", {"Bucket": B, "Key": K}, "CreateMultipartUpload", (part(B, K),)),
    (
        "upload_part",
        {"Bucket": B, "Key": K, "PartNumber": 3, "UploadId": "u-1", "Body": b"part"},
        "UploadPart",
        (part(B, K),),
    ),
    (
        "complete_multipart_upload",
        {
            "Bucket": B,
            "Key": K,
            "UploadId": "u-1",
            "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": '"e1"'}]},
        },
        "CompleteMultipartUpload",
        (write(B, K),),
    ),
    (
        "abort_multipart_upload",
        {"Bucket": B, "Key": K, "UploadId": "u-1"},
        "AbortMultipartUpload",
        (part(B, K),),
    ),
    ("delete_object", {"Bucket": B, "Key": K}, "DeleteObject", (Target(Action.DELETE, B, K, Scope.OBJECT),)),
    (
        "delete_object",
        {"Bucket": B, "Key": K, "VersionId": "v1"},
        "DeleteObject",
        (Target(Action.DELETE, B, K, Scope.OBJECT),),
    ),
    ("head_bucket", {"Bucket": B}, "HeadBucket", (bucket_meta(B),)),
    ("get_bucket_location", {"Bucket": B}, "GetBucketLocation", (bucket_meta(B),)),
    ("list_buckets", {}, "ListBuckets", ()),
    ("create_bucket", {"Bucket": B}, "CreateBucket", (admin_bucket(B),)),
    ("delete_bucket", {"Bucket": B}, "DeleteBucket", (admin_bucket(B),)),
    ("get_bucket_policy", {"Bucket": B}, "GetBucketPolicy", (admin_bucket(B),)),
    ("put_bucket_policy", {"Bucket": B, "Policy": "{}"}, "PutBucketPolicy", (admin_bucket(B),)),
    ("delete_bucket_policy", {"Bucket": B}, "DeleteBucketPolicy", (admin_bucket(B),)),
    ("get_bucket_versioning", {"Bucket": B}, "GetBucketVersioning", (admin_bucket(B),)),
    ("get_bucket_acl", {"Bucket": B}, "GetBucketAcl", (admin_bucket(B),)),
    ("get_object_tagging", {"Bucket": B, "Key": K}, "GetObjectTagging", (admin_object(B, K),)),
    (
        "put_object_tagging",
        {"Bucket": B, "Key": K, "Tagging": {"TagSet": [{"Key": "a", "Value": "b"}]}},
        "PutObjectTagging",
        (admin_object(B, K),),
    ),
    ("get_object_acl", {"Bucket": B, "Key": K, "VersionId": "v"}, "GetObjectAcl", (admin_object(B, K),)),
    ("put_object_acl", {"Bucket": B, "Key": K, "ACL": "private"}, "PutObjectAcl", (admin_object(B, K),)),
    ("get_object_retention", {"Bucket": B, "Key": K}, "GetObjectRetention", (admin_object(B, K),)),
    ("get_object_legal_hold", {"Bucket": B, "Key": K}, "GetObjectLegalHold", (admin_object(B, K),)),
    (
        "restore_object",
        {"Bucket": B, "Key": K, "RestoreRequest": {"Days": 1}},
        "RestoreObject",
        (admin_object(B, K),),
    ),
]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    ("method", "params", "name", "targets"), DATA_PLANE, ids=[f"{c[2]}-{i}" for i, c in enumerate(DATA_PLANE)]
)
def test_botocore_request_is_classified_with_its_targets(
    style: str, method: str, params: dict[str, Any], name: str, targets: tuple[Target, ...]
) -> None:
    op = classify_boto(style, method, **params)
    assert (op.name, op.targets) == (name, targets)
    assert op.bucket == params.get("Bucket")
    assert op.key == params.get("Key")


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    "copy_source",
    [
        {"Bucket": SRC_B, "Key": SRC_K},
        {"Bucket": SRC_B, "Key": SRC_K, "VersionId": "3/L4kq+x"},
        f"{SRC_B}/{SRC_K}",
    ],
)
def test_copy_object_needs_read_on_the_source_and_write_on_the_target(style: str, copy_source: Any) -> None:
    op = classify_boto(style, "copy_object", Bucket=B, Key=K, CopySource=copy_source)
    assert op.name == "CopyObject"
    assert op.targets == (write(B, K), read(SRC_B, SRC_K))
    assert op.copy_source == (SRC_B, SRC_K)
    assert op.action is Action.WRITE


@pytest.mark.parametrize("style", STYLES)
def test_upload_part_copy_needs_read_on_the_source_and_write_on_the_target(style: str) -> None:
    op = classify_boto(
        style,
        "upload_part_copy",
        Bucket=B,
        Key=K,
        PartNumber=2,
        UploadId="u-1",
        CopySource={"Bucket": SRC_B, "Key": SRC_K},
        CopySourceRange="bytes=0-9",
    )
    assert (op.name, op.targets, op.copy_source) == (
        "UploadPartCopy",
        (part(B, K), read(SRC_B, SRC_K)),
        (SRC_B, SRC_K),
    )


@pytest.mark.parametrize("style", STYLES)
def test_delete_objects_takes_its_targets_from_the_body(style: str) -> None:
    op = classify_boto(style, "delete_objects", Bucket=B, Delete={"Objects": [{"Key": "a"}], "Quiet": True})
    assert (op.name, op.bucket, op.targets, op.body_targets) == ("DeleteObjects", B, (), True)
    assert op.action is Action.DELETE


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    "extra",
    [
        {"ACL": "public-read"},
        {"ACL": "authenticated-read"},
        {"GrantRead": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'},
        {"GrantFullControl": "id=abc"},
        {"Tagging": "team=ml"},
        {"ObjectLockMode": "COMPLIANCE"},
        {"ObjectLockLegalHoldStatus": "ON"},
    ],
)
@pytest.mark.parametrize("method", ["put_object", "create_multipart_upload", "copy_object"])
def test_write_that_publishes_tags_or_locks_the_object_also_needs_admin(
    style: str, extra: dict[str, str], method: str
) -> None:
    params: dict[str, Any] = {"Bucket": B, "Key": K, **extra}
    if method == "copy_object":
        params["CopySource"] = {"Bucket": SRC_B, "Key": SRC_K}
    op = classify_boto(style, method, **params)
    assert (part(B, K) if method == "create_multipart_upload" else write(B, K)) in op.targets
    assert admin_object(B, K) in op.targets


@pytest.mark.parametrize("style", STYLES)
def test_delete_bypassing_governance_retention_needs_admin(style: str) -> None:
    op = classify_boto(style, "delete_object", Bucket=B, Key=K, BypassGovernanceRetention=True)
    assert op.targets == (Target(Action.DELETE, B, K, Scope.OBJECT), admin_object(B, K))


@pytest.mark.parametrize("style", STYLES)
def test_batch_delete_bypassing_governance_retention_needs_delete_and_admin_on_every_key(style: str) -> None:
    op = classify_boto(
        style, "delete_objects", Bucket=B, Delete={"Objects": [{"Key": "a"}]}, BypassGovernanceRetention=True
    )
    assert (op.name, op.targets, op.body_actions) == ("DeleteObjects", (), (Action.DELETE, Action.ADMIN))
    assert op.targets_in_body(["a", "b"]) == (
        Target(Action.DELETE, B, "a"),
        admin_object(B, "a"),
        Target(Action.DELETE, B, "b"),
        admin_object(B, "b"),
    )


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    ("operation", "method", "params", "name", "targets"),
    [
        ("get_object", "GET", {"Bucket": B, "Key": K}, "GetObject", (read(B, K),)),
        (
            "get_object",
            "GET",
            {"Bucket": B, "Key": K, "VersionId": "v", "ResponseContentType": "a/b"},
            "GetObject",
            (read(B, K),),
        ),
        ("head_object", "HEAD", {"Bucket": B, "Key": K}, "HeadObject", (read(B, K),)),
        ("put_object", "PUT", {"Bucket": B, "Key": K}, "PutObject", (write(B, K),)),
        (
            "upload_part",
            "PUT",
            {"Bucket": B, "Key": K, "UploadId": "u", "PartNumber": 1},
            "UploadPart",
            (part(B, K),),
        ),
        ("list_objects_v2", "GET", {"Bucket": B, "Prefix": "p/"}, "ListObjectsV2", (listing(B, "p/"),)),
    ],
)
def test_presigned_url_is_classified_like_the_signed_request(
    style: str, operation: str, method: str, params: dict[str, Any], name: str, targets: tuple[Target, ...]
) -> None:
    head = presigned_head(style, operation, method, **params)
    assert head.has_query("X-Amz-Signature") and head.has_query("X-Amz-Security-Token")
    op = classify(head, virtual_host_base=BASE)
    assert (op.name, op.targets) == (name, targets)


# --- every operation in botocore's S3 model --------------------------------------------------------------

_MODEL = _CLIENTS["path"].meta.service_model
# Deprecated operations share their request shape with the current one; S3 cannot tell them apart either.
_SAME_REQUEST_AS = {
    "GetBucketLifecycle": "GetBucketLifecycleConfiguration",
    "PutBucketLifecycle": "PutBucketLifecycleConfiguration",
    "GetBucketNotification": "GetBucketNotificationConfiguration",
    "PutBucketNotification": "PutBucketNotificationConfiguration",
    "ListDirectoryBuckets": "ListBuckets",
}
_DENIED_ON_PURPOSE = {"RenameObject"}  # moves an object in from a key its own header names
_NOT_BUCKET_REQUESTS = {"WriteGetObjectResponse"}  # S3 Object Lambda callback, not a bucket at all
# The spec's non-admin operations; everything else in the model must need admin and nothing less.
_NOT_ADMIN = {
    "GetObject",
    "HeadObject",
    "GetObjectAttributes",
    "SelectObjectContent",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "ListMultipartUploads",
    "ListParts",
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "DeleteObject",
    "DeleteObjects",
    "HeadBucket",
    "GetBucketLocation",
}


def _minimal(shape: Shape, name: str = "") -> Any:
    """The smallest valid value botocore accepts for a shape, with a real bucket and key."""
    kind = shape.type_name
    if kind == "structure":
        members = shape.members  # type: ignore[attr-defined]
        if shape.metadata.get("union"):
            first = next(iter(members))
            return {first: _minimal(members[first], first)}
        return {m: _minimal(members[m], m) for m in shape.required_members}  # type: ignore[attr-defined]
    if kind == "list":
        return [_minimal(shape.member)]  # type: ignore[attr-defined]
    if kind == "map":
        return {"k": "v"}
    if kind == "string":
        if shape.enum:  # type: ignore[attr-defined]
            return shape.enum[0]  # type: ignore[attr-defined]
        value = {"Bucket": B, "Key": K, "CopySource": f"{SRC_B}/{SRC_K}"}.get(name, "x")
        return value.ljust(shape.metadata.get("min", 0), "x")
    return {
        "integer": 1,
        "long": 1,
        "boolean": True,
        "blob": b"x",
        "double": 1.0,
        "float": 1.0,
        "timestamp": datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
    }[kind]


def _model_cases() -> list[str]:
    return sorted(set(_MODEL.operation_names) - _NOT_BUCKET_REQUESTS)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("operation", _model_cases())
def test_every_botocore_operation_is_recognised_with_the_right_action(style: str, operation: str) -> None:
    model = _MODEL.operation_model(operation)
    params = _minimal(model.input_shape) if model.input_shape else {}
    op = classify_boto(style, xform_name(operation), **params)
    if operation in _DENIED_ON_PURPOSE:
        assert (op.name, op.targets) == (UNKNOWN, ())
        return
    assert op.name == _SAME_REQUEST_AS.get(operation, operation)
    if op.name == "ListBuckets":  # answered by the gateway from the caller's grants: nothing to forward
        assert op.gateway_answers and not op.targets
        return
    assert op.targets or op.body_targets
    actions = {t.action for t in op.targets}
    if operation in _NOT_ADMIN:
        assert Action.ADMIN not in actions
    else:
        assert actions == {Action.ADMIN}
        bucket = params.get("Bucket", "")
        key = params.get("Key")
        expected = admin_object(bucket, key) if key else Target(Action.ADMIN, bucket, "", Scope.PREFIX)
        assert op.targets == (expected,)


def test_no_two_rules_for_one_method_can_match_the_same_request() -> None:
    # Two rules overlap when a request carrying both rules' sub-resources is acceptable to each of them.
    for (level, method), rules in _RULES.items():
        for i, a in enumerate(rules):
            for b in rules[i + 1 :]:
                needed = {n for n, _ in a.requires} | {n for n, _ in b.requires}
                accepted_by_a = needed <= {n for n, _ in a.requires} | a.allows
                accepted_by_b = needed <= {n for n, _ in b.requires} | b.allows
                values_clash = any(dict(a.requires).get(n, v) != v for n, v in b.requires if v is not None)
                overlap = a.copy == b.copy and accepted_by_a and accepted_by_b and not values_clash
                assert not overlap, (level.name, method, a.name, b.name)


def test_object_lambda_callback_is_not_taken_for_an_object_write() -> None:
    # The route becomes a host label, which looks like a virtual-hosted bucket to us.
    head = botocore_head("path", "write_get_object_response", RequestRoute="route", RequestToken="t")
    op = classify(head, virtual_host_base=BASE)
    assert (op.bucket, op.key) == ("route", "WriteGetObjectResponse")
    assert (op.name, op.targets) == (UNKNOWN, ())


# --- shapes botocore never sends: fail closed ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("POST", f"/{B}", []),  # browser form upload
        ("POST", f"/{B}?uploads", []),
        ("POST", f"/{B}/k", []),
        ("POST", f"/{B}/k?delete", []),
        ("PATCH", f"/{B}/k", []),
        ("OPTIONS", f"/{B}/k", []),
        ("HEAD", "/", []),
        ("PUT", "/", []),
        ("DELETE", "/", []),
        ("GET", f"/{B}/k?acl&tagging", []),  # two sub-resources: which one S3 picks is not ours to guess
        ("GET", f"/{B}?versions&uploads", []),
        ("GET", f"/{B}/k?uploadId=u&partNumber=1&tagging", []),
        ("GET", f"/{B}/k?renameObject", []),
        ("GET", f"/{B}/k?somethingNew", []),
        ("GET", f"/{B}?list-type=3", []),
        ("GET", f"/{B}?prefix=a/&prefix=b/", []),  # repeated parameter
        ("GET", f"/{B}/k?versionId=1&versionId=2", []),
        ("PUT", f"/{B}/k?partNumber=1", []),  # half an UploadPart
        ("PUT", f"/{B}/k?uploadId=u", []),
        ("PUT", f"/{B}/k?x-amz-copy-source=other/secret", []),  # header smuggled into the query
        ("PUT", f"/{B}/k?x-amz-acl=public-read", []),
        ("PUT", f"/{B}/k?renameObject", [("x-amz-rename-source", "/other/secret")]),
        ("GET", f"/{B}/k", [("x-amz-copy-source", "other/secret")]),
        ("POST", f"/{B}/k?uploads", [("x-amz-copy-source", "other/secret")]),
        ("PUT", f"/{B}/k?tagging", [("x-amz-copy-source", "other/secret")]),
        ("PUT", f"/{B}/k", [("x-amz-copy-source", "o1/a"), ("x-amz-copy-source", "o2/b")]),
        ("POST", f"/{B}/k?select", []),
        ("PUT", f"/{B}?analytics", []),  # configuration id missing
        ("GET", f"/{B}/k?AWSAccessKeyId=AKID&Signature=x&Expires=1", []),  # SigV2 presign
        ("GET", f"/{B}/k?=x", []),
    ],
)
def test_unrecognised_request_has_no_targets_and_is_denied(
    method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    op = raw(method, target, headers)
    assert op.name == UNKNOWN
    assert op.targets == ()
    assert not op.body_targets
    assert op.action is None


def test_query_sub_resources_are_case_sensitive() -> None:
    assert raw("GET", f"/{B}/k?Tagging").name == UNKNOWN
    assert raw("POST", f"/{B}/k?Uploads").name == UNKNOWN
    assert raw("GET", f"/{B}?List-Type=2").name == UNKNOWN


def test_presign_parameter_names_do_not_depend_on_case() -> None:
    op = raw("GET", f"/{B}/k?x-amz-signature=abc&X-AMZ-DATE=20300101T000000Z")
    assert (op.name, op.targets) == ("GetObject", (read(B, "k"),))


def test_sdk_operation_hint_does_not_change_the_classification() -> None:
    # S3 routes on method and sub-resources only; a lying x-id must not sway us either.
    assert raw("GET", f"/{B}/k?x-id=PutObject").targets == (read(B, "k"),)
    assert raw("PUT", f"/{B}/k?x-id=GetObject").targets == (write(B, "k"),)


def test_listing_prefix_is_taken_decoded_from_the_query() -> None:
    op = raw("GET", f"/{B}?list-type=2&prefix=a%2Fb%20c%2B/&delimiter=%2F")
    assert op.targets == (listing(B, "a/b c+/"),)


def test_list_multipart_uploads_without_prefix_lists_the_whole_bucket() -> None:
    assert raw("GET", f"/{B}?uploads").targets == (listing(B, ""),)


def test_list_parts_of_an_upload_is_a_list_on_that_key() -> None:
    assert raw("GET", f"/{B}/a/b?uploadId=xyz").targets == (Target(Action.LIST, B, "a/b", Scope.OBJECT),)


def test_private_canned_acl_on_upload_needs_no_admin() -> None:
    for acl in ("private", "bucket-owner-read", "bucket-owner-full-control"):
        assert raw("PUT", f"/{B}/k", [("x-amz-acl", acl)]).targets == (write(B, "k"),)


def test_virtual_host_request_touches_the_host_bucket_even_if_the_path_names_another() -> None:
    op = raw("GET", "/other-bucket/secret.bin", host=f"{B}.{BASE}:9000")
    assert (op.bucket, op.key) == (B, "other-bucket/secret.bin")
    assert op.targets == (read(B, "other-bucket/secret.bin"),)


def test_virtual_host_root_is_a_bucket_listing() -> None:
    assert raw("GET", "/?list-type=2&prefix=x/", host=f"{B}.{BASE}").targets == (listing(B, "x/"),)


def test_listener_host_overrides_the_host_header() -> None:
    head = RequestHead.build("GET", "/k", [("Host", f"{B}.{BASE}")])
    op = classify(head, virtual_host_base=BASE, host=f"other-bucket.{BASE}")
    assert op.targets == (read("other-bucket", "k"),)


@pytest.mark.parametrize(
    ("target", "code"),
    [
        (f"/{B}/a/../secret", "InvalidArgument"),
        (f"/{B}/a/%2E%2E/secret", "InvalidArgument"),
        (f"/{B}/a%2F..%2Fsecret", "InvalidArgument"),
        (f"/{B}/./k", "InvalidArgument"),
        (f"/{B}/k%00", "InvalidArgument"),
        (f"/{B}/k%FF", "InvalidURI"),
        (f"/{B}/k%G1", "InvalidURI"),
        ("/Bad_Bucket/k", "InvalidBucketName"),
        ("/b/k", "InvalidBucketName"),
        (f"/{B}%2Fk", "InvalidBucketName"),
    ],
)
def test_unsafe_paths_are_errors_not_operations(target: str, code: str) -> None:
    with pytest.raises(S3Error) as err:
        raw("GET", target)
    assert err.value.code == code
    assert err.value.status == 400


def test_copy_source_with_dot_segments_is_refused() -> None:
    with pytest.raises(S3Error) as err:
        raw("PUT", f"/{B}/k", [("x-amz-copy-source", f"{SRC_B}/public/../secret")])
    assert err.value.code == "InvalidArgument"


def test_copy_source_access_point_arn_is_refused() -> None:
    arn = "arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/k"
    with pytest.raises(S3Error) as err:
        raw("PUT", f"/{B}/k", [("x-amz-copy-source", arn)])
    assert err.value.code == "InvalidArgument"


# --- properties ---------------------------------------------------------------------------------------------

_METHODS = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "get", ""])
_SUBRESOURCES = st.sampled_from(
    [
        "uploads",
        "uploadId",
        "partNumber",
        "list-type",
        "delete",
        "location",
        "versions",
        "tagging",
        "acl",
        "policy",
        "attributes",
        "restore",
        "select",
        "select-type",
        "prefix",
        "versionId",
        "x-id",
        "X-Amz-Signature",
        "analytics",
        "id",
        "session",
    ]
)
_HEADER_NAMES = st.sampled_from(
    [
        "x-amz-copy-source",
        "X-Amz-Copy-Source",
        "x-amz-acl",
        "x-amz-grant-read",
        "x-amz-tagging",
        "x-amz-bypass-governance-retention",
        "Host",
        "Content-Type",
    ]
)
_PATH_CHARS = st.sampled_from(
    ["/", ".", "..", "%", "%2F", "%2e", "%00", "%FF", "a", "b", "+", "\\", "é", "-", "~"]
)
_PATHS = st.one_of(st.text(max_size=40), st.lists(_PATH_CHARS, max_size=12).map(lambda xs: "/" + "".join(xs)))
_HEADS = st.builds(
    RequestHead,
    method=_METHODS,
    raw_path=_PATHS,
    raw_query=st.just(""),
    headers=st.lists(st.tuples(_HEADER_NAMES, st.one_of(st.text(max_size=30), _PATHS)), max_size=4).map(
        CIMultiDict
    ),
    query=st.lists(
        st.tuples(st.one_of(_SUBRESOURCES, st.text(max_size=8)), st.sampled_from(["", "2", "x", "a/b"])),
        max_size=4,
    ).map(tuple),
)


def _classify_or_error(head: RequestHead, base: str, host: str | None) -> Operation | None:
    try:
        return classify(head, virtual_host_base=base, host=host)
    except S3Error:
        return None


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    head=_HEADS,
    base=st.sampled_from(["", BASE, "S3.Test.Local:9000"]),
    host=st.one_of(
        st.none(), st.text(max_size=30), st.sampled_from([f"{B}.{BASE}", BASE, "[::1]:9", f"x..y.{BASE}"])
    ),
)
def test_classify_raises_only_s3_errors_and_never_passes_without_targets(
    head: RequestHead, base: str, host: str | None
) -> None:
    op = _classify_or_error(head, base, host)
    if op is None or op.name == UNKNOWN:
        assert op is None or (op.targets == () and not op.body_targets)
        return
    assert op.targets or op.body_targets or op.gateway_answers
    for target in op.targets:
        if target.scope is Scope.OBJECT:
            assert validate_key(target.key) == target.key
    own = [t for t in op.targets if op.copy_source is None or (t.bucket, t.key) != op.copy_source]
    assert all(t.bucket == (op.bucket or "") for t in own)


@settings(max_examples=300)
@given(
    target=st.text(max_size=60).map(lambda s: "/" + s),
    method=_METHODS,
    headers=st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=30)), max_size=3),
)
def test_classify_on_raw_request_lines_raises_only_s3_errors(
    target: str, method: str, headers: list[tuple[str, str]]
) -> None:
    try:
        head = RequestHead.build(method or "GET", target, headers)
        op = classify(head, virtual_host_base=BASE)
    except S3Error:
        return
    assert op.name == UNKNOWN or op.targets or op.body_targets or op.gateway_answers


_KEY_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60).filter(
    lambda k: all(seg not in (".", "..") for seg in k.replace("\\", "/").split("/"))
)


@settings(max_examples=150, deadline=None)
@given(key=_KEY_TEXT, style=st.sampled_from(STYLES))
def test_any_key_botocore_sends_is_read_back_exactly(key: str, style: str) -> None:
    op = classify_boto(style, "get_object", Bucket=B, Key=key)
    assert op.targets == (read(B, key),)


@pytest.mark.parametrize(
    ("headers", "overwrite"),
    [
        ([], Overwrite.GUARDABLE),
        ([("If-None-Match", "*")], Overwrite.GUARDABLE),
        ([("If-Match", '"e1"')], Overwrite.MAY),
        ([("If-None-Match", '"e1"')], Overwrite.MAY),
        ([("If-None-Match", "*"), ("If-Match", '"e1"')], Overwrite.MAY),
        ([("If-None-Match", "*"), ("If-None-Match", '"e1"')], Overwrite.MAY),
    ],
)
def test_a_write_that_asks_to_replace_an_object_cannot_be_guarded(
    headers: list[tuple[str, str]], overwrite: Overwrite
) -> None:
    assert raw("PUT", f"/{B}/k", headers).targets == (write(B, "k", overwrite),)
    assert raw("POST", f"/{B}/k?uploadId=u", headers).targets == (write(B, "k", overwrite),)
    # Parts never replace an object, whatever the caller sends.
    assert raw("PUT", f"/{B}/k?partNumber=1&uploadId=u", headers).targets == (part(B, "k"),)
