"""The aws cli (v1, botocore's default CRC32 checksums) against the real gateway, over HTTP and HTTPS.

Each command runs in a clean environment, so no user configuration or credentials leak in.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from botocore.exceptions import ClientError
from support.awscli import SIGV4_CONFIG, cli_for
from support.world import BUCKET, Identity, World

BIG = 20 * 1024 * 1024 + 3  # above the cli's 8 MiB multipart threshold: three parts


def upstream_exists(world: World, key: str) -> bool:
    try:
        world.upstream().head_object(Bucket=BUCKET, Key=key)
    except ClientError:
        return False
    return True


def denied_in_audit(world: World, who: Identity, operation: str, tls: bool) -> bool:
    """HEAD refusals have no body, so the cli shows only '403': the gateway's audit log says why."""
    gateway = world.https if tls else world.http
    return any(
        e["principal"] == who.name and e["operation"] == operation and e["reason"] == "AccessDenied"
        for e in gateway.events()
    )


def fetch(url: str, ca_bundle: Path | None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else None
    try:
        with urllib.request.urlopen(url, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_cp_multipart_upload_and_download_roundtrip(
    world: World, unique: str, tls: bool, tmp_path: Path
) -> None:
    olly = world.person(f"olly-{unique}")
    cli = cli_for(world, olly, tls, tmp_path / "home")
    source = tmp_path / "weights.bin"
    source.write_bytes(secrets.token_bytes(BIG))
    url = f"s3://{BUCKET}/cli/{unique}/weights.bin"

    cli.denied("s3", "cp", str(source), url)
    assert not upstream_exists(world, f"cli/{unique}/weights.bin")

    world.grant(olly, f"s3://{BUCKET}/cli/{unique}/", "read,write")
    cli.ok("s3", "cp", str(source), url)
    stored = world.upstream().get_object(Bucket=BUCKET, Key=f"cli/{unique}/weights.bin")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(source.read_bytes()).digest()
    gateway = world.https if tls else world.http
    operations = {e["operation"] for e in gateway.events() if e["principal"] == olly.name}
    assert {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"} <= operations

    target = tmp_path / "down.bin"
    cli.ok("s3", "cp", url, str(target))
    assert target.read_bytes() == source.read_bytes()


def test_cp_download_is_denied_without_grant(world: World, unique: str, tls: bool, tmp_path: Path) -> None:
    pia = world.person(f"pia-{unique}")
    world.upstream().put_object(Bucket=BUCKET, Key=f"cli/{unique}/secret.bin", Body=b"secret")
    cli = cli_for(world, pia, tls, tmp_path / "home")
    target = tmp_path / "down.bin"
    # `s3 cp` HEADs first; a HEAD refusal has no body, so the cli reports only the status.
    stderr = cli.denied("s3", "cp", f"s3://{BUCKET}/cli/{unique}/secret.bin", str(target), code="403")
    assert "HeadObject" in stderr
    assert denied_in_audit(world, pia, "HeadObject", tls)
    assert not target.exists()


def test_ls_lists_only_with_a_list_grant(world: World, unique: str, tls: bool, tmp_path: Path) -> None:
    quin = world.person(f"quin-{unique}")
    for name in ("a.bin", "b.bin", "sub/c.bin"):
        world.upstream().put_object(Bucket=BUCKET, Key=f"cli/{unique}/{name}", Body=name.encode())
    cli = cli_for(world, quin, tls, tmp_path / "home")
    cli.denied("s3", "ls", f"s3://{BUCKET}/cli/{unique}/")

    world.grant(quin, f"s3://{BUCKET}/cli/{unique}/", "list")
    listing = cli.ok("s3", "ls", f"s3://{BUCKET}/cli/{unique}/")
    names = sorted(line.split()[-1] for line in listing.splitlines())
    assert names == ["a.bin", "b.bin", "sub/"]
    recursive = cli.ok("s3", "ls", "--recursive", f"s3://{BUCKET}/cli/{unique}/")
    assert sorted(line.split()[-1] for line in recursive.splitlines()) == [
        f"cli/{unique}/a.bin",
        f"cli/{unique}/b.bin",
        f"cli/{unique}/sub/c.bin",
    ]
    # The grant is on the prefix, not the bucket: listing the bucket root stays closed.
    cli.denied("s3", "ls", f"s3://{BUCKET}/")


def test_rm_deletes_only_with_a_delete_grant(world: World, unique: str, tls: bool, tmp_path: Path) -> None:
    rosa = world.person(f"rosa-{unique}")
    key = f"cli/{unique}/old.bin"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"old")
    cli = cli_for(world, rosa, tls, tmp_path / "home")
    cli.denied("s3", "rm", f"s3://{BUCKET}/{key}")
    assert upstream_exists(world, key)

    world.grant(rosa, f"s3://{BUCKET}/cli/{unique}/", "delete")
    cli.ok("s3", "rm", f"s3://{BUCKET}/{key}")
    assert not upstream_exists(world, key)


def test_s3api_head_get_and_list(world: World, unique: str, tls: bool, tmp_path: Path) -> None:
    sami = world.person(f"sami-{unique}")
    body = secrets.token_bytes(100_000)
    key = f"cli/{unique}/rows.parquet"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=body)
    cli = cli_for(world, sami, tls, tmp_path / "home")
    out = tmp_path / "got.bin"

    cli.denied("s3api", "head-object", "--bucket", BUCKET, "--key", key, code="403")
    assert denied_in_audit(world, sami, "HeadObject", tls)
    cli.denied("s3api", "get-object", "--bucket", BUCKET, "--key", key, str(out))
    assert not out.exists()
    cli.denied("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", f"cli/{unique}/")

    world.grant(sami, f"s3://{BUCKET}/cli/{unique}/", "read,list")
    head = json.loads(cli.ok("s3api", "head-object", "--bucket", BUCKET, "--key", key))
    assert head["ContentLength"] == len(body)
    got = json.loads(cli.ok("s3api", "get-object", "--bucket", BUCKET, "--key", key, str(out)))
    assert got["ContentLength"] == len(body)
    assert out.read_bytes() == body
    listed = json.loads(cli.ok("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", f"cli/{unique}/"))
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [(key, len(body))]


def test_presigned_url_from_cli_is_served_only_with_grant(
    world: World, unique: str, tls: bool, tmp_path: Path
) -> None:
    tara = world.person(f"tara-{unique}")
    key = f"cli/{unique}/shared.txt"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"shared text")
    cli = cli_for(world, tara, tls, tmp_path / "home", SIGV4_CONFIG)
    url = cli.ok("s3", "presign", f"s3://{BUCKET}/{key}", "--expires-in", "300").strip()
    assert "X-Amz-Signature=" in url

    status, body = fetch(url, cli.ca_bundle)
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert b"shared text" not in body

    world.grant(tara, f"s3://{BUCKET}/cli/{unique}/", "read")
    assert fetch(url, cli.ca_bundle) == (200, b"shared text")


def test_sigv2_presigned_url_from_default_cli_is_refused_with_a_hint(
    world: World, unique: str, tls: bool, tmp_path: Path
) -> None:
    uma = world.person(f"uma-{unique}")
    key = f"cli/{unique}/v2.txt"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"v2 body")
    world.grant(uma, f"s3://{BUCKET}/cli/{unique}/", "read")
    cli = cli_for(world, uma, tls, tmp_path / "home")
    url = cli.ok("s3", "presign", f"s3://{BUCKET}/{key}").strip()
    assert "AWSAccessKeyId=" in url  # SigV2: what the cli does by default
    status, body = fetch(url, cli.ca_bundle)
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert b"AWS4-HMAC-SHA256" in body
    assert b"v2 body" not in body
