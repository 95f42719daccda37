"""The gateway end to end with boto3: moto as the bucket, the real gateway process, real signatures."""

from __future__ import annotations

import hashlib
import secrets
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError
from support.world import BUCKET, World


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def put_upstream(world: World, key: str, body: bytes) -> None:
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=body)


def test_read_is_denied_without_grant_with_request_link(world: World, unique: str) -> None:
    alice = world.person(f"alice-{unique}", ("ml",))
    put_upstream(world, f"models/{unique}/w.gguf", b"weights")
    s3 = world.client(alice)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/w.gguf")
    assert error_code(exc) == "AccessDenied"
    message = exc.value.response["Error"]["Message"]
    assert f"{world.http.control_url}/request?resource=s3%3A%2F%2F{BUCKET}%2Fmodels%2F{unique}" in message
    assert "action=read" in message


def test_head_denial_carries_request_url_header(world: World, unique: str) -> None:
    alice = world.person(f"alice-{unique}")
    s3 = world.client(alice)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=BUCKET, Key=f"models/{unique}/w.gguf")
    headers = exc.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert headers["x-grantgate-request-url"].startswith(world.http.control_url + "/request?")


def test_granted_read_returns_identical_bytes_and_audits(world: World, unique: str) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    body = secrets.token_bytes(3 * 1024 * 1024 + 17)
    put_upstream(world, f"models/{unique}/big.safetensors", body)
    grant = world.grant(bob, f"s3://{BUCKET}/models/{unique}/", "read")
    resp = world.client(bob).get_object(Bucket=BUCKET, Key=f"models/{unique}/big.safetensors")
    assert hashlib.sha256(resp["Body"].read()).digest() == hashlib.sha256(body).digest()
    request_id = resp["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"]
    event = world.http.event_for(request_id)
    assert event["principal"] == bob.name
    assert event["decision"] == "allow"
    assert event["operation"] == "GetObject"
    assert event["grant_ids"] == [grant.id]
    assert event["bytes_out"] == len(body)
    assert event["status"] == 200


def test_every_object_operation_allowed_with_grant_and_denied_without(world: World, unique: str) -> None:
    carol = world.person(f"carol-{unique}")
    s3 = world.client(carol)
    key = f"training-data/{unique}/rows.jsonl"
    calls = {
        "write": lambda: s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"a": 1}\n'),
        "read": lambda: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
        "list": lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix=f"training-data/{unique}/"),
        "delete": lambda: s3.delete_object(Bucket=BUCKET, Key=key),
    }
    for action, call in calls.items():
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "AccessDenied", action
    world.grant(carol, f"s3://{BUCKET}/training-data/{unique}/", "read,list,write,delete")
    calls["write"]()
    assert calls["read"]() == b'{"a": 1}\n'
    listed = calls["list"]()
    assert [o["Key"] for o in listed["Contents"]] == [key]
    s3.head_object(Bucket=BUCKET, Key=key)
    s3.list_objects(Bucket=BUCKET, Prefix=f"training-data/{unique}/")
    calls["delete"]()
    with pytest.raises(ClientError):
        world.upstream().head_object(Bucket=BUCKET, Key=key)


def test_grant_on_prefix_does_not_open_sibling_prefix(world: World, unique: str) -> None:
    dave = world.person(f"dave-{unique}")
    put_upstream(world, f"models/llama-{unique}/x", b"a")
    put_upstream(world, f"models/llama-{unique}-2/x", b"b")
    world.grant(dave, f"s3://{BUCKET}/models/llama-{unique}/", "read,list")
    s3 = world.client(dave)
    assert s3.get_object(Bucket=BUCKET, Key=f"models/llama-{unique}/x")["Body"].read() == b"a"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=f"models/llama-{unique}-2/x")
    assert error_code(exc) == "AccessDenied"
    with pytest.raises(ClientError):
        s3.list_objects_v2(Bucket=BUCKET, Prefix=f"models/llama-{unique}")


def test_read_grant_does_not_allow_write(world: World, unique: str) -> None:
    erin = world.person(f"erin-{unique}")
    world.grant(erin, f"s3://{BUCKET}/models/{unique}/", "read")
    with pytest.raises(ClientError) as exc:
        world.client(erin).put_object(Bucket=BUCKET, Key=f"models/{unique}/evil", Body=b"x")
    assert error_code(exc) == "AccessDenied"
    with pytest.raises(ClientError):
        world.upstream().head_object(Bucket=BUCKET, Key=f"models/{unique}/evil")


def test_revoked_and_expired_grants_deny_the_next_request(world: World, unique: str) -> None:
    frank = world.person(f"frank-{unique}")
    put_upstream(world, f"models/{unique}/m", b"m")
    s3 = world.client(frank)
    grant = world.grant(frank, f"s3://{BUCKET}/models/{unique}/", "read")
    assert s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/m")["Body"].read() == b"m"
    world.revoke(grant)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/m")
    assert error_code(exc) == "AccessDenied"

    world.grant(frank, f"s3://{BUCKET}/models/{unique}/", "read", ttl=timedelta(seconds=1))
    assert s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/m")["Body"].read() == b"m"
    time.sleep(1.2)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/m")
    assert error_code(exc) == "AccessDenied"


def test_wrong_secret_and_unknown_key_are_refused(world: World, unique: str) -> None:
    gina = world.person(f"gina-{unique}")
    world.grant(gina, f"s3://{BUCKET}/models/", "list")
    wrong = type(gina)(gina.name, gina.access_key_id, gina.secret_access_key[:-2] + "xx")
    with pytest.raises(ClientError) as exc:
        world.client(wrong).list_objects_v2(Bucket=BUCKET, Prefix="models/")
    assert error_code(exc) == "SignatureDoesNotMatch"
    # The claimed key is recorded, but the forged request is not attributed to its owner.
    event = world.http.event_for(
        exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"]
    )
    assert event["access_key_id"] == gina.access_key_id
    assert event["principal"] is None
    assert event["decision"] == "deny"
    unknown = type(gina)("nobody", "GG" + "A" * 18, gina.secret_access_key)
    with pytest.raises(ClientError) as exc:
        world.client(unknown).list_objects_v2(Bucket=BUCKET, Prefix="models/")
    assert error_code(exc) == "InvalidAccessKeyId"


def test_revoked_access_key_is_refused(world: World, unique: str) -> None:
    hank = world.person(f"hank-{unique}")
    world.grant(hank, f"s3://{BUCKET}/models/", "list")
    s3 = world.client(hank)
    s3.list_objects_v2(Bucket=BUCKET, Prefix="models/")
    world.revoke_key(hank)
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=BUCKET, Prefix="models/")
    assert error_code(exc) == "InvalidAccessKeyId"


def test_unsigned_amz_header_is_rejected(world: World, unique: str) -> None:
    ivy = world.person(f"ivy-{unique}")
    world.grant(ivy, f"s3://{BUCKET}/models/{unique}/", "read,write")
    s3 = world.client(ivy)

    def smuggle(request, **_kwargs):  # type: ignore[no-untyped-def]
        request.headers["x-amz-copy-source"] = f"{BUCKET}/training-data/secret.jsonl"

    s3.meta.events.register("before-send.s3.PutObject", smuggle)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=BUCKET, Key=f"models/{unique}/copy", Body=b"")
    assert error_code(exc) == "AccessDenied"
    assert "not signed" in exc.value.response["Error"]["Message"]


def test_presigned_url_works_and_expires(world: World, unique: str) -> None:
    jack = world.person(f"jack-{unique}")
    put_upstream(world, f"models/{unique}/p", b"presigned body")
    world.grant(jack, f"s3://{BUCKET}/models/{unique}/", "read")
    s3 = world.client(jack, signature_version="s3v4")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": f"models/{unique}/p"})
    with urllib.request.urlopen(url) as resp:
        assert resp.read() == b"presigned body"
    short = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": f"models/{unique}/p"}, ExpiresIn=1
    )
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as http_exc:
        urllib.request.urlopen(short)
    assert http_exc.value.code == 403
    assert b"<Code>AccessDenied</Code>" in http_exc.value.read()


def test_presigned_url_refused_for_another_method(world: World, unique: str) -> None:
    kim = world.person(f"kim-{unique}")
    world.grant(kim, f"s3://{BUCKET}/models/{unique}/", "read,write,delete")
    put_upstream(world, f"models/{unique}/keep", b"keep")
    url = world.client(kim, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": f"models/{unique}/keep"}
    )
    req = urllib.request.Request(url, method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as http_exc:
        urllib.request.urlopen(req)
    assert http_exc.value.code == 403
    assert b"SignatureDoesNotMatch" in http_exc.value.read()
    assert world.upstream().get_object(Bucket=BUCKET, Key=f"models/{unique}/keep")["Body"].read() == b"keep"


def test_copy_needs_read_on_source_and_write_on_target(world: World, unique: str) -> None:
    lee = world.person(f"lee-{unique}")
    put_upstream(world, f"training-data/{unique}/secret", b"secret rows")
    world.grant(lee, f"s3://{BUCKET}/models/{unique}/", "read,write")
    s3 = world.client(lee)
    source = {"Bucket": BUCKET, "Key": f"training-data/{unique}/secret"}
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=BUCKET, Key=f"models/{unique}/stolen", CopySource=source)
    assert error_code(exc) == "AccessDenied"
    with pytest.raises(ClientError):
        world.upstream().head_object(Bucket=BUCKET, Key=f"models/{unique}/stolen")
    world.grant(lee, f"s3://{BUCKET}/training-data/{unique}/", "read")
    s3.copy_object(Bucket=BUCKET, Key=f"models/{unique}/copied", CopySource=source)
    assert s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/copied")["Body"].read() == b"secret rows"


def test_delete_objects_with_one_forbidden_key_deletes_nothing(world: World, unique: str) -> None:
    mia = world.person(f"mia-{unique}")
    for key in (f"models/{unique}/a", f"models/{unique}/b", f"training-data/{unique}/c"):
        put_upstream(world, key, b"x")
    world.grant(mia, f"s3://{BUCKET}/models/{unique}/", "delete")
    s3 = world.client(mia)
    batch = {"Objects": [{"Key": f"models/{unique}/a"}, {"Key": f"training-data/{unique}/c"}]}
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=BUCKET, Delete=batch)
    assert error_code(exc) == "AccessDenied"
    upstream = world.upstream()
    upstream.head_object(Bucket=BUCKET, Key=f"models/{unique}/a")
    upstream.head_object(Bucket=BUCKET, Key=f"training-data/{unique}/c")
    result = s3.delete_objects(
        Bucket=BUCKET, Delete={"Objects": [{"Key": f"models/{unique}/a"}, {"Key": f"models/{unique}/b"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == [f"models/{unique}/a", f"models/{unique}/b"]


def test_delete_objects_bypassing_governance_needs_admin_on_every_key(world: World, unique: str) -> None:
    ola = world.person(f"ola-{unique}")
    keys = [f"models/{unique}/a", f"models/{unique}/b", f"training-data/{unique}/c"]
    for key in keys:
        put_upstream(world, key, b"x")
    world.grant(ola, f"s3://{BUCKET}/models/{unique}/", "delete,admin")
    world.grant(ola, f"s3://{BUCKET}/training-data/{unique}/", "delete")
    s3 = world.client(ola)
    # Delete but no admin on one key: the whole batch is refused, naming what is missing.
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(
            Bucket=BUCKET,
            Delete={"Objects": [{"Key": keys[0]}, {"Key": keys[2]}]},
            BypassGovernanceRetention=True,
        )
    assert error_code(exc) == "AccessDenied"
    assert f"admin on s3://{BUCKET}/{keys[2]}" in exc.value.response["Error"]["Message"]
    upstream = world.upstream()
    for key in keys:
        upstream.head_object(Bucket=BUCKET, Key=key)
    # Delete and admin on every key: allowed, as for a single DeleteObject bypassing governance.
    result = s3.delete_objects(
        Bucket=BUCKET,
        Delete={"Objects": [{"Key": keys[0]}, {"Key": keys[1]}]},
        BypassGovernanceRetention=True,
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == keys[:2]
    request_id = result["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"]
    event = world.http.event_for(request_id)
    assert (event["operation"], event["decision"], event["keys_touched"]) == ("DeleteObjects", "allow", 2)


def test_range_and_conditional_reads_pass_through(world: World, unique: str) -> None:
    nia = world.person(f"nia-{unique}")
    body = bytes(range(256)) * 64
    put_upstream(world, f"models/{unique}/r", body)
    world.grant(nia, f"s3://{BUCKET}/models/{unique}/", "read")
    s3 = world.client(nia)
    part = s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/r", Range="bytes=100-199")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["Body"].read() == body[100:200]
    assert part["ContentRange"] == f"bytes 100-199/{len(body)}"
    etag = s3.head_object(Bucket=BUCKET, Key=f"models/{unique}/r")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/r", IfNoneMatch=etag)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/r", IfMatch='"0000"')
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/r", Range=f"bytes={len(body) + 10}-")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
def test_uploads_roundtrip_byte_identical(
    world: World, unique: str, tls: bool, checksums: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    olga = world.person(f"olga-{unique}-{int(tls)}-{checksums}")
    world.grant(olga, f"s3://{BUCKET}/models/{unique}/", "read,write,list")
    s3 = world.client(olga, tls=tls, checksums=checksums)
    small = secrets.token_bytes(1000)
    s3.put_object(Bucket=BUCKET, Key=f"models/{unique}/small-{tls}-{checksums}", Body=small)
    big = tmp_path / "big.bin"
    big.write_bytes(secrets.token_bytes(20 * 1024 * 1024 + 3))
    s3.upload_file(str(big), BUCKET, f"models/{unique}/big-{tls}-{checksums}")  # multipart at 8 MiB
    upstream = world.upstream()
    got_small = upstream.get_object(Bucket=BUCKET, Key=f"models/{unique}/small-{tls}-{checksums}")
    assert got_small["Body"].read() == small
    got_big = upstream.get_object(Bucket=BUCKET, Key=f"models/{unique}/big-{tls}-{checksums}")["Body"].read()
    assert hashlib.sha256(got_big).digest() == hashlib.sha256(big.read_bytes()).digest()
    downloaded = tmp_path / "down.bin"
    s3.download_file(BUCKET, f"models/{unique}/big-{tls}-{checksums}", str(downloaded))
    assert downloaded.read_bytes() == big.read_bytes()


def test_sigv2_presigned_url_is_refused_with_a_hint(world: World, unique: str) -> None:
    lou = world.person(f"lou-{unique}")
    world.grant(lou, f"s3://{BUCKET}/models/{unique}/", "read")
    put_upstream(world, f"models/{unique}/v2", b"v2")
    url = world.client(lou, signature_version="s3").generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": f"models/{unique}/v2"}
    )
    assert "AWSAccessKeyId=" in url
    with pytest.raises(urllib.error.HTTPError) as http_exc:
        urllib.request.urlopen(url)
    assert http_exc.value.code in (400, 403, 501)
    assert b"s3v4" in http_exc.value.read()


def test_request_signed_with_a_date_header_and_no_x_amz_date_is_accepted(
    world: World, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore's own SigV4 signer (the one used without awscrt) keeps a Date header the caller sets and
    # then sends no X-Amz-Date: `Date: Fri, 04 Dec 2026 17:44:06 -0000`. S3 accepts that.
    from botocore.auth import AUTH_TYPE_MAPS, S3SigV4Auth

    monkeypatch.setitem(AUTH_TYPE_MAPS, "s3v4", S3SigV4Auth)
    bob = world.person(f"bob-{unique}", ("infra",))
    put_upstream(world, f"models/{unique}/dated.bin", b"dated")
    world.grant(bob, f"s3://{BUCKET}/models/{unique}/", "read")
    s3 = world.client(bob)
    sent: list[dict[str, bytes]] = []

    def add_date(request: object, **_: object) -> None:
        request.headers["Date"] = "placeholder"  # type: ignore[attr-defined]

    def seen(request: object, **_: object) -> None:
        sent.append(dict(request.headers))  # type: ignore[attr-defined]

    s3.meta.events.register_first("before-sign.s3", add_date)
    s3.meta.events.register("before-send.s3", seen)
    resp = s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/dated.bin")
    assert resp["Body"].read() == b"dated"
    (headers,) = sent
    assert "X-Amz-Date" not in headers
    assert headers["Date"].endswith(b" -0000")
