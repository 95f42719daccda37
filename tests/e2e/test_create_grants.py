"""`create` grants write new objects only, through the real gateway and moto with boto3: the gateway
sends each PUT, copy and multipart completion with If-None-Match: *, refuses a write that asks to
replace an object, and refuses create-only writes of a kind the bucket does not enforce (moto ignores
If-None-Match on CopyObject)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from support.world import BUCKET, World

from proxy.s3.conditional import PROBE_PREFIX


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_create_grant_writes_a_new_object_but_cannot_overwrite_it(world: World, unique: str) -> None:
    who = world.person(f"creator-{unique}")
    prefix = f"releases-{unique}/"
    world.grant(who, f"s3://{BUCKET}/{prefix}", "create,read")
    s3 = world.client(who)

    s3.put_object(Bucket=BUCKET, Key=prefix + "v1.safetensors", Body=b"released weights")
    with pytest.raises(ClientError) as again:
        s3.put_object(Bucket=BUCKET, Key=prefix + "v1.safetensors", Body=b"tampered")
    assert _code(again) == "PreconditionFailed"
    body = world.upstream().get_object(Bucket=BUCKET, Key=prefix + "v1.safetensors")["Body"].read()
    assert body == b"released weights"


def test_create_grant_refuses_a_write_that_turns_the_guard_off(world: World, unique: str) -> None:
    who = world.person(f"sneaky-{unique}")
    prefix = f"releases-{unique}/"
    world.upstream().put_object(Bucket=BUCKET, Key=prefix + "v1.bin", Body=b"released")
    etag = world.upstream().head_object(Bucket=BUCKET, Key=prefix + "v1.bin")["ETag"]
    world.grant(who, f"s3://{BUCKET}/{prefix}", "create")
    s3 = world.client(who)

    with pytest.raises(ClientError) as if_match:
        s3.put_object(Bucket=BUCKET, Key=prefix + "v1.bin", Body=b"tampered", IfMatch=etag)
    assert _code(if_match) == "AccessDenied"
    assert "create new objects only" in if_match.value.response["Error"]["Message"]
    assert world.upstream().get_object(Bucket=BUCKET, Key=prefix + "v1.bin")["Body"].read() == b"released"
    # The guard itself, sent by the caller, is no reason to refuse.
    s3.put_object(Bucket=BUCKET, Key=prefix + "v2.bin", Body=b"new", IfNoneMatch="*")


def test_create_grant_multipart_completion_cannot_replace_an_object(world: World, unique: str) -> None:
    who = world.person(f"uploader-{unique}")
    prefix = f"ckpt-{unique}/"
    world.upstream().put_object(Bucket=BUCKET, Key=prefix + "taken.bin", Body=b"original")
    world.grant(who, f"s3://{BUCKET}/{prefix}", "create")
    s3 = world.client(who)

    def multipart(key: str) -> None:
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        part = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"parts")
        s3.complete_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )

    multipart(prefix + "fresh.bin")
    assert world.upstream().get_object(Bucket=BUCKET, Key=prefix + "fresh.bin")["Body"].read() == b"parts"
    with pytest.raises(ClientError) as replaced:
        multipart(prefix + "taken.bin")
    assert _code(replaced) == "PreconditionFailed"
    assert world.upstream().get_object(Bucket=BUCKET, Key=prefix + "taken.bin")["Body"].read() == b"original"


def test_create_copy_is_refused_where_the_bucket_ignores_if_none_match(world: World, unique: str) -> None:
    who = world.person(f"copier-{unique}")
    prefix = f"copies-{unique}/"
    world.upstream().put_object(Bucket=BUCKET, Key=prefix + "src.bin", Body=b"source")
    world.upstream().put_object(Bucket=BUCKET, Key=prefix + "dst.bin", Body=b"released")
    world.grant(who, f"s3://{BUCKET}/{prefix}", "create,read")
    s3 = world.client(who)

    with pytest.raises(ClientError) as refused:
        s3.copy_object(
            Bucket=BUCKET, Key=prefix + "dst.bin", CopySource={"Bucket": BUCKET, "Key": prefix + "src.bin"}
        )
    assert _code(refused) == "AccessDenied"
    assert "does not enforce If-None-Match on CopyObject" in refused.value.response["Error"]["Message"]
    assert world.upstream().get_object(Bucket=BUCKET, Key=prefix + "dst.bin")["Body"].read() == b"released"
    # The probe cleaned up after itself.
    probes = world.upstream().list_objects_v2(Bucket=BUCKET, Prefix=PROBE_PREFIX)
    assert probes.get("KeyCount", 0) == 0


def test_write_grant_still_overwrites_without_a_guard(world: World, unique: str) -> None:
    who = world.person(f"writer-{unique}")
    prefix = f"scratch-{unique}/"
    world.grant(who, f"s3://{BUCKET}/{prefix}", "write,create")
    s3 = world.client(who)

    s3.put_object(Bucket=BUCKET, Key=prefix + "a.bin", Body=b"one")
    s3.put_object(Bucket=BUCKET, Key=prefix + "a.bin", Body=b"two")
    assert world.upstream().get_object(Bucket=BUCKET, Key=prefix + "a.bin")["Body"].read() == b"two"
