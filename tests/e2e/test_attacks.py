"""Crafted requests against the real gateway: broken aws-chunked bodies, bad signatures, path tricks, replays.

Every refusal is checked twice: the caller gets the precise S3 error, and the bucket is unchanged.
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from support.rawclient import Signed, Trailer, crc32_b64, encode_signed
from support.world import BUCKET, Identity, World

from proxy.s3.sigv4 import STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER

CHUNK = 64 * 1024
# Four data chunks, the last one short: enough to chain signatures and to exercise the held-back tail.
PAYLOAD_SIZE = 3 * CHUNK + 1000


@pytest.fixture
def mallory(world: World, unique: str) -> Identity:
    """A caller with every action on attacks/<unique>/ and nothing else."""
    who = world.person(f"mallory-{unique}")
    world.grant(who, f"s3://{BUCKET}/attacks/{unique}/", "read,list,write,delete")
    return who


def upstream_body(world: World, key: str, bucket: str = BUCKET) -> bytes | None:
    try:
        return world.upstream().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise


def bucket_snapshot(world: World, bucket: str = BUCKET) -> dict[str, str]:
    """key -> ETag of every object in the bucket, as the bucket itself reports them."""
    out: dict[str, str] = {}
    for page in world.upstream().get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({o["Key"]: o["ETag"] for o in page.get("Contents", ())})
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def outside(snapshot: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: v for k, v in snapshot.items() if not k.startswith(prefix)}


transports = pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])


# ---------------------------------------------------------------- signed aws-chunked bodies


@transports
def test_signed_chunked_upload_is_stored_byte_identical(
    world: World, mallory: Identity, unique: str, tls: bool
) -> None:
    payload = secrets.token_bytes(PAYLOAD_SIZE)
    key = f"attacks/{unique}/signed-{tls}"
    resp = world.raw_client(mallory, tls=tls).put_aws_chunked(
        f"/{BUCKET}/{key}", payload, mode=STREAMING_SIGNED, chunk_size=CHUNK
    )
    assert resp.status == 200, resp.body
    assert upstream_body(world, key) == payload


@pytest.mark.parametrize("bad_chunk", [0, 2, 3, 4], ids=["first", "middle", "last-data", "final-empty"])
def test_wrong_chunk_signature_is_refused_and_nothing_is_stored(
    world: World, mallory: Identity, unique: str, bad_chunk: int
) -> None:
    payload = secrets.token_bytes(PAYLOAD_SIZE)
    key = f"attacks/{unique}/bad-chunk-{bad_chunk}"
    resp = world.raw_client(mallory).put_aws_chunked(
        f"/{BUCKET}/{key}", payload, mode=STREAMING_SIGNED, chunk_size=CHUNK, bad_chunk=bad_chunk
    )
    assert resp.status == 403, resp.body
    assert resp.error_code == "SignatureDoesNotMatch"
    assert upstream_body(world, key) is None


def test_chunk_signed_with_another_secret_is_refused(world: World, mallory: Identity, unique: str) -> None:
    # The seed signature is right but the chunks are signed with another key: the chain must be checked.
    key = f"attacks/{unique}/forged-chunks"
    client = world.raw_client(mallory)
    signed = client.sign(
        "PUT",
        f"/{BUCKET}/{key}",
        headers={"content-encoding": "aws-chunked", "x-amz-decoded-content-length": "5"},
        payload_hash=STREAMING_SIGNED,
    )
    forged = Signed(signed.headers, signed.seed_signature, b"k" * 32, signed.amz_date, signed.scope)
    resp = client.send("PUT", f"/{BUCKET}/{key}", signed.headers, encode_signed([b"hello"], forged))
    assert resp.status == 403
    assert resp.error_code == "SignatureDoesNotMatch"
    assert upstream_body(world, key) is None


# ---------------------------------------------------------------- trailer checksums


@transports
@pytest.mark.parametrize("mode", [STREAMING_UNSIGNED_TRAILER, STREAMING_SIGNED_TRAILER])
def test_trailer_with_correct_crc32_is_stored_byte_identical(
    world: World, mallory: Identity, unique: str, tls: bool, mode: str
) -> None:
    payload = secrets.token_bytes(PAYLOAD_SIZE)
    key = f"attacks/{unique}/trailer-{tls}-{mode}"
    resp = world.raw_client(mallory, tls=tls).put_aws_chunked(f"/{BUCKET}/{key}", payload, mode=mode)
    assert resp.status == 200, resp.body
    assert upstream_body(world, key) == payload


@pytest.mark.parametrize("mode", [STREAMING_UNSIGNED_TRAILER, STREAMING_SIGNED_TRAILER])
def test_trailer_with_wrong_crc32_is_bad_digest_and_nothing_is_stored(
    world: World, mallory: Identity, unique: str, mode: str
) -> None:
    payload = secrets.token_bytes(PAYLOAD_SIZE)
    key = f"attacks/{unique}/bad-crc-{mode}"
    wrong = Trailer("x-amz-checksum-crc32", crc32_b64(payload + b"x"))
    resp = world.raw_client(mallory).put_aws_chunked(f"/{BUCKET}/{key}", payload, mode=mode, trailer=wrong)
    assert resp.status == 400, resp.body
    assert resp.error_code == "BadDigest"
    assert upstream_body(world, key) is None


def test_wrong_trailer_signature_is_refused_and_nothing_is_stored(
    world: World, mallory: Identity, unique: str
) -> None:
    payload = secrets.token_bytes(PAYLOAD_SIZE)
    key = f"attacks/{unique}/bad-trailer-signature"
    resp = world.raw_client(mallory).put_aws_chunked(
        f"/{BUCKET}/{key}", payload, mode=STREAMING_SIGNED_TRAILER, bad_trailer_signature=True
    )
    assert resp.status == 403, resp.body
    assert resp.error_code == "SignatureDoesNotMatch"
    assert upstream_body(world, key) is None


@pytest.mark.parametrize(
    ("mode", "breakage"),
    [
        (STREAMING_SIGNED, {"bad_chunk": 1}),
        (STREAMING_SIGNED_TRAILER, {"bad_trailer_signature": True}),
        (STREAMING_UNSIGNED_TRAILER, {"trailer": Trailer("x-amz-checksum-crc32", "AAAAAA==")}),
    ],
    ids=["bad-chunk", "bad-trailer-signature", "bad-crc32"],
)
def test_failed_overwrite_keeps_the_previous_object(
    world: World, mallory: Identity, unique: str, mode: str, breakage: dict[str, Any]
) -> None:
    key = f"attacks/{unique}/precious"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"the previous version")
    payload = secrets.token_bytes(PAYLOAD_SIZE)
    resp = world.raw_client(mallory).put_aws_chunked(
        f"/{BUCKET}/{key}", payload, mode=mode, chunk_size=CHUNK, **breakage
    )
    assert 400 <= resp.status < 500, resp.body
    assert upstream_body(world, key) == b"the previous version"


# ---------------------------------------------------------------- declared lengths and chunk sizes


@pytest.mark.parametrize(
    ("declared", "code"),
    [
        (PAYLOAD_SIZE + 1, "IncompleteBody"),
        (PAYLOAD_SIZE * 1000, "IncompleteBody"),
        (PAYLOAD_SIZE - 1, "IncompleteBody"),
        (6 * 1024**4, "EntityTooLarge"),
    ],
    ids=["one-more", "far-more", "one-less", "beyond-5TiB"],
)
@pytest.mark.parametrize("mode", [STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER])
def test_decoded_length_that_lies_stores_nothing(
    world: World, mallory: Identity, unique: str, declared: int, code: str, mode: str
) -> None:
    payload = secrets.token_bytes(PAYLOAD_SIZE)
    key = f"attacks/{unique}/lying-length-{declared}-{mode}"
    resp = world.raw_client(mallory).put_aws_chunked(
        f"/{BUCKET}/{key}", payload, mode=mode, chunk_size=CHUNK, decoded_length=declared
    )
    assert resp.status == 400, resp.body
    assert resp.error_code == code
    assert upstream_body(world, key) is None


def test_huge_signed_chunk_header_is_refused_before_buffering(
    world: World, mallory: Identity, unique: str
) -> None:
    # A chunk must be held whole until its signature is checked: a 1 GiB chunk header is a memory bomb.
    key = f"attacks/{unique}/huge-chunk"
    client = world.raw_client(mallory)
    size = 1024**3
    signed = client.sign(
        "PUT",
        f"/{BUCKET}/{key}",
        headers={"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(size)},
        payload_hash=STREAMING_SIGNED,
    )
    body = b"%x;chunk-signature=%s\r\n" % (size, b"0" * 64) + b"x" * 1024
    resp = client.send("PUT", f"/{BUCKET}/{key}", {**signed.headers, "content-length": str(size + 200)}, body)
    assert resp.status == 400, resp.body
    assert resp.error_code == "InvalidRequest"
    assert upstream_body(world, key) is None


def test_endless_chunk_header_line_is_refused(world: World, mallory: Identity, unique: str) -> None:
    key = f"attacks/{unique}/long-line"
    client = world.raw_client(mallory)
    signed = client.sign(
        "PUT",
        f"/{BUCKET}/{key}",
        headers={
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": "10",
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
        payload_hash=STREAMING_UNSIGNED_TRAILER,
    )
    resp = client.send("PUT", f"/{BUCKET}/{key}", signed.headers, b"a" + b"0" * 64 * 1024)
    assert resp.status == 400, resp.body
    assert resp.error_code == "InvalidRequest"
    assert upstream_body(world, key) is None


# ---------------------------------------------------------------- time and signature


@pytest.mark.parametrize("offset", [-20, 20], ids=["past", "future"])
def test_request_dated_20_minutes_off_is_time_skewed(
    world: World, mallory: Identity, unique: str, offset: int
) -> None:
    key = f"attacks/{unique}/skewed"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"present")
    when = datetime.now(UTC) + timedelta(minutes=offset)
    resp = world.raw_client(mallory).request("GET", f"/{BUCKET}/{key}", now=when)
    assert resp.status == 403
    assert resp.error_code == "RequestTimeTooSkewed"
    assert b"present" not in resp.body


def test_request_dated_10_minutes_off_is_accepted(world: World, mallory: Identity, unique: str) -> None:
    # The control for the skew test: the 15-minute window is a window, not an exact match.
    key = f"attacks/{unique}/slightly-skewed"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"present")
    when = datetime.now(UTC) - timedelta(minutes=10)
    resp = world.raw_client(mallory).request("GET", f"/{BUCKET}/{key}", now=when)
    assert resp.status == 200
    assert resp.body == b"present"


def test_tampered_signature_is_refused(world: World, mallory: Identity, unique: str) -> None:
    key = f"attacks/{unique}/tampered"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"guarded")
    client = world.raw_client(mallory)
    signed = client.sign("GET", f"/{BUCKET}/{key}")
    auth = signed.headers["Authorization"]
    last = auth[-1]
    tampered = {**signed.headers, "Authorization": auth[:-1] + ("0" if last != "0" else "1")}
    resp = client.send("GET", f"/{BUCKET}/{key}", tampered)
    assert resp.status == 403
    assert resp.error_code == "SignatureDoesNotMatch"
    assert b"guarded" not in resp.body
    assert client.send("GET", f"/{BUCKET}/{key}", signed.headers).body == b"guarded"


def test_signed_body_swapped_in_transit_never_lands(world: World, mallory: Identity, unique: str) -> None:
    # The signature binds the body's SHA-256; the bucket (or the gateway) must refuse another body.
    key = f"attacks/{unique}/swapped"
    client = world.raw_client(mallory)
    signed = client.sign("PUT", f"/{BUCKET}/{key}", payload_hash=_sha256(b"original"))
    resp = client.send("PUT", f"/{BUCKET}/{key}", signed.headers, b"evil-one")
    assert 400 <= resp.status < 500, resp.body
    assert upstream_body(world, key) is None


# ---------------------------------------------------------------- where a request points


def test_signature_for_one_bucket_is_refused_on_another(world: World, mallory: Identity, unique: str) -> None:
    other = f"other-{unique}"
    upstream = world.upstream()
    upstream.create_bucket(Bucket=other)
    key = f"attacks/{unique}/same-key"
    upstream.put_object(Bucket=other, Key=key, Body=b"other bucket secret")
    upstream.put_object(Bucket=BUCKET, Key=key, Body=b"mine")
    client = world.raw_client(mallory)
    for method, body in (("GET", b""), ("PUT", b"overwrite"), ("DELETE", b"")):
        signed = client.sign(method, f"/{BUCKET}/{key}", payload_hash=_sha256(body))
        replayed = client.send(method, f"/{other}/{key}", signed.headers, body)
        assert replayed.status == 403, (method, replayed.body)
        assert replayed.error_code == "SignatureDoesNotMatch"
        assert b"other bucket secret" not in replayed.body
    # Signed honestly for the other bucket, the grant (on BUCKET only) still refuses it.
    honest = client.request("GET", f"/{other}/{key}")
    assert honest.status == 403
    assert honest.error_code == "AccessDenied"
    assert upstream_body(world, key, bucket=other) == b"other bucket secret"


@pytest.fixture
def secret_next_door(world: World, unique: str) -> Iterator[str]:
    """An object outside the caller's grant, in a sibling prefix that path tricks would aim at."""
    key = f"secret-{unique}/x"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=f"TOP SECRET {unique}".encode())
    yield key


# (raw path under /BUCKET/, whether the gateway must refuse it outright)
PATH_TRICKS = [
    ("attacks/{u}/../secret-{u}/x", True),
    ("attacks/{u}/./../secret-{u}/x", True),
    ("attacks/{u}/%2E%2E/secret-{u}/x", True),
    ("attacks/{u}%2F..%2Fsecret-{u}%2Fx", True),
    ("attacks/{u}/..%2F..%2Fsecret-{u}/x", True),
    ("attacks/{u}/x%5C..%5C..%5Csecret-{u}%5Cx", True),
    ("attacks/{u}/%00/../../secret-{u}/x", True),
    ("attacks/{u}/x%00/../secret-{u}/x", True),
    ("attacks/{u}/%C0%AE%C0%AE/secret-{u}/x", True),  # overlong UTF-8 '..'
    # Decoded once this is the literal key 'attacks/<u>/%2E%2E%2F...', inside the grant: allowed, and
    # it must stay that literal key upstream instead of being decoded a second time.
    ("attacks/{u}/%252E%252E%252Fsecret-{u}%252Fx", False),
    ("attacks/{u}%252F..%252Fsecret-{u}%252Fx", True),  # literal 'attacks/<u>%2F...': outside
]
BUCKET_TRICKS = [
    "/{b}%2Fsecret-{u}/x",
    "//{b}/secret-{u}/x",
    "/{b}/../{b}/secret-{u}/x",
]


@pytest.mark.parametrize(("template", "refused"), PATH_TRICKS, ids=[t for t, _ in PATH_TRICKS])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_path_tricks_never_leave_the_granted_prefix(
    world: World,
    mallory: Identity,
    unique: str,
    secret_next_door: str,
    template: str,
    refused: bool,
    method: str,
) -> None:
    path = f"/{BUCKET}/" + template.format(u=unique)
    _assert_contained(world, mallory, unique, secret_next_door, method, path, refused=refused)


@pytest.mark.parametrize("template", BUCKET_TRICKS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_bucket_path_tricks_are_refused(
    world: World, mallory: Identity, unique: str, secret_next_door: str, template: str, method: str
) -> None:
    path = template.format(b=BUCKET, u=unique)
    _assert_contained(world, mallory, unique, secret_next_door, method, path, refused=True)


def _assert_contained(
    world: World, who: Identity, unique: str, secret_key: str, method: str, path: str, *, refused: bool
) -> None:
    prefix = f"attacks/{unique}/"
    secret = f"TOP SECRET {unique}".encode()
    before = outside(bucket_snapshot(world), prefix)
    body = b"overwritten" if method == "PUT" else b""
    resp = world.raw_client(who).request(method, path, body=body)
    assert secret not in resp.body
    if refused:
        assert 400 <= resp.status < 500, (resp.status, resp.body)
        # Authenticated, then refused for where it points: not a signature artefact.
        assert resp.error_code != "SignatureDoesNotMatch"
        if resp.request_id:
            event = world.http.event_for(resp.request_id)
            assert event["upstream_status"] is None, event
    assert outside(bucket_snapshot(world), prefix) == before
    assert upstream_body(world, secret_key) == secret


def test_literal_nul_byte_in_path_is_refused(
    world: World, mallory: Identity, unique: str, secret_next_door: str
) -> None:
    client = world.raw_client(mallory)
    for path in (
        f"/{BUCKET}/attacks/{unique}/\x00/../../{secret_next_door}",
        f"/{BUCKET}\x00/{secret_next_door}",
    ):
        signed = client.sign("GET", path)
        head = "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
        resp = client.send_bytes(f"GET {path} HTTP/1.1\r\n{head}Connection: close\r\n\r\n".encode())
        assert 400 <= resp.status < 500
        assert b"TOP SECRET" not in resp.body


def test_double_encoded_key_stays_literal_upstream(world: World, mallory: Identity, unique: str) -> None:
    path = f"/{BUCKET}/attacks/{unique}/a%252Fb"
    resp = world.raw_client(mallory).request("PUT", path, body=b"literal")
    assert resp.status == 200, resp.body
    assert upstream_body(world, f"attacks/{unique}/a%2Fb") == b"literal"
    assert upstream_body(world, f"attacks/{unique}/a/b") is None


# ---------------------------------------------------------------- presigned URL replay


def _fetch(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_presigned_url_replayed_after_revocation_is_refused(world: World, unique: str) -> None:
    victor = world.person(f"victor-{unique}")
    key = f"presigned/{unique}/report.bin"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"quarterly numbers")
    grant = world.grant(victor, f"s3://{BUCKET}/presigned/{unique}/", "read,write")
    # botocore presigns S3 with SigV2 unless told otherwise; the gateway accepts only SigV4.
    s3: Any = world.client(victor, signature_version="s3v4")
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key})
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": f"{key}.new"})
    assert _fetch(get_url) == (200, b"quarterly numbers")

    world.revoke(grant)
    status, body = _fetch(get_url)
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert b"quarterly numbers" not in body
    status, body = _fetch(put_url, "PUT", b"after revocation")
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert upstream_body(world, f"{key}.new") is None
