"""More crafted requests: look-alike keys (Unicode forms, trailing dots), bucket confusion between path and
virtual-host addressing, and presigned URLs used with another method.

As in test_attacks.py, each refusal is checked twice: the caller's answer, and the bucket left unchanged.
"""

from __future__ import annotations

import unicodedata
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError
from support.gateways import extra_gateway, sync_gateway
from support.rawclient import RawClient
from support.world import BUCKET, GatewayProcess, Identity, World

VHOST_BASE = "s3.grantgate.test"


def upstream_body(world: World, key: str, bucket: str = BUCKET) -> bytes | None:
    try:
        return world.upstream().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise


def raw(gateway: GatewayProcess, who: Identity) -> RawClient:
    return RawClient(gateway.s3_url, who.access_key_id, who.secret_access_key)


def path_of(key: str, bucket: str = BUCKET) -> str:
    return f"/{bucket}/" + quote(key.encode(), safe="/")


# ---------------------------------------------------------------- Unicode normalization


def test_nfc_and_nfd_keys_are_distinct_and_a_grant_on_one_does_not_cover_the_other(
    world: World, unique: str
) -> None:
    nfc = unicodedata.normalize("NFC", f"unicode-{unique}/café/")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    who = world.person(f"uni-{unique}")
    world.grant(who, f"s3://{BUCKET}/{nfc}", "read,write")
    world.upstream().put_object(Bucket=BUCKET, Key=f"{nfd}secret", Body=b"decomposed secret")
    s3 = world.client(who)

    s3.put_object(Bucket=BUCKET, Key=f"{nfc}mine", Body=b"composed")
    with pytest.raises(ClientError) as denied:
        s3.get_object(Bucket=BUCKET, Key=f"{nfd}secret")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=BUCKET, Key=f"{nfd}mine", Body=b"decomposed write")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"

    # Two objects, never folded into one: the NFC key reaches only the NFC object.
    assert upstream_body(world, f"{nfc}mine") == b"composed"
    assert upstream_body(world, f"{nfd}mine") is None
    assert upstream_body(world, f"{nfd}secret") == b"decomposed secret"
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=BUCKET, Key=f"{nfc}secret")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"


def test_fullwidth_and_lookalike_characters_are_not_folded_into_the_granted_prefix(
    world: World, unique: str
) -> None:
    who = world.person(f"lookalike-{unique}")
    world.grant(who, f"s3://{BUCKET}/shared-{unique}/", "read")
    client = raw(world.http, who)
    for lookalike in (
        "\uff53hared",
        "sh\u0430red",
        "SHARED",
        "shared\u200b",
    ):  # fullwidth s, Cyrillic a, case, ZWSP
        key = f"{lookalike}-{unique}/x"
        world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"not yours")
        resp = client.request("GET", path_of(key))
        assert resp.status == 403, (lookalike, resp.body)
        assert resp.error_code == "AccessDenied"
        assert b"not yours" not in resp.body


# ---------------------------------------------------------------- trailing dots


def test_key_with_trailing_dot_is_its_own_object(world: World, unique: str) -> None:
    who = world.person(f"dots-{unique}")
    world.grant(who, f"s3://{BUCKET}/dots-{unique}/public.", "read,write")
    world.upstream().put_object(Bucket=BUCKET, Key=f"dots-{unique}/public", Body=b"undotted secret")
    client = raw(world.http, who)

    # 'public.' is granted; a filesystem-minded normaliser would strip the dot and serve 'public'.
    resp = client.request("GET", path_of(f"dots-{unique}/public."))
    assert resp.status == 404, resp.body
    assert resp.error_code == "NoSuchKey"
    assert b"undotted secret" not in resp.body
    assert client.request("GET", path_of(f"dots-{unique}/public")).status == 403

    assert client.request("PUT", path_of(f"dots-{unique}/public."), body=b"dotted").status == 200
    assert upstream_body(world, f"dots-{unique}/public.") == b"dotted"
    assert upstream_body(world, f"dots-{unique}/public") == b"undotted secret"


@pytest.mark.parametrize("path", ["/{b}./{k}", "/{b}../{k}", "/{b}%2E/{k}", "/{b}/./{k}", "/{b}/{k}/."])
def test_trailing_dots_in_bucket_or_segments_never_reach_another_object(
    world: World, unique: str, path: str
) -> None:
    who = world.person(f"dotted-{unique}")
    world.grant(who, f"s3://{BUCKET}/dotted-{unique}/", "read")
    key = f"other-{unique}/x"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"dotted secret")
    resp = raw(world.http, who).request("GET", path.format(b=BUCKET, k=key))
    assert 400 <= resp.status < 500, resp.body
    assert resp.error_code != "SignatureDoesNotMatch"
    assert b"dotted secret" not in resp.body


# ---------------------------------------------------------------- path style vs virtual-hosted style


@pytest.fixture(scope="module")
def vhost(world: World) -> Iterator[GatewayProcess]:
    """A gateway that also takes `<bucket>.s3.grantgate.test` virtual-hosted requests, in front of moto."""
    with extra_gateway(
        world, "vhost", world.upstream_url, server=f'virtual_host_base = "{VHOST_BASE}"'
    ) as gw:
        sync_gateway(world, gw)
        yield gw


@pytest.fixture
def confusion(world: World, vhost: GatewayProcess, unique: str) -> dict[str, Any]:
    """mallory may read s3://BUCKET/vh-<u>/; a second bucket holds a secret at the same key."""
    other = f"vh-other-{unique}"
    upstream = world.upstream()
    upstream.create_bucket(Bucket=other)
    key = f"vh-{unique}/doc.txt"
    upstream.put_object(Bucket=BUCKET, Key=key, Body=b"granted document")
    upstream.put_object(Bucket=other, Key=key, Body=b"other bucket secret")
    upstream.put_object(Bucket=other, Key=f"{BUCKET}/{key}", Body=b"other bucket nested secret")
    upstream.put_object(Bucket=BUCKET, Key=f"{other}/{key}", Body=b"nested under ours")
    who = world.person(f"vh-{unique}")
    world.grant(who, f"s3://{BUCKET}/vh-{unique}/", "read")
    sync_gateway(world, vhost)
    return {"other": other, "key": key, "who": who, "port": vhost.s3_url.rpartition(":")[2]}


def _vhost_get(vhost: GatewayProcess, who: Identity, host: str, path: str) -> Any:
    client = raw(vhost, who)
    signed = client.sign("GET", path, headers={"host": host})
    return client.send("GET", path, signed.headers)


def test_virtual_hosted_request_for_the_granted_bucket_is_served(
    vhost: GatewayProcess, confusion: dict[str, Any]
) -> None:
    host = f"{BUCKET}.{VHOST_BASE}:{confusion['port']}"
    resp = _vhost_get(vhost, confusion["who"], host, "/" + confusion["key"])
    assert resp.status == 200, resp.body
    assert resp.body == b"granted document"
    event = vhost.event_for(resp.request_id or "")
    assert (event["bucket"], event["key"]) == (BUCKET, confusion["key"])


@pytest.mark.parametrize(
    ("host", "path", "bucket", "key"),
    [
        # Host names the other bucket; the path *looks* like the granted bucket and key.
        ("{other}.{base}:{port}", "/{b}/{key}", "{other}", "{b}/{key}"),
        ("{other}.{base}.:{port}", "/{b}/{key}", "{other}", "{b}/{key}"),  # FQDN trailing dot
        ("{OTHER}.{BASE}:{port}", "/{b}/{key}", "{other}", "{b}/{key}"),  # case of a DNS name
        # Host names the granted bucket; the path names the other: the key is 'other/...', ungranted.
        ("{b}.{base}:{port}", "/{other}/{key}", "{b}", "{other}/{key}"),
        # A deeper host is a bucket name with a dot in it, not the granted bucket.
        ("x.{b}.{base}:{port}", "/{key}", "x.{b}", "{key}"),
    ],
    ids=["host-other-path-ours", "fqdn-dot", "uppercase-host", "host-ours-path-other", "deeper-host"],
)
def test_bucket_comes_from_the_host_alone_when_it_is_virtual_hosted(
    world: World,
    vhost: GatewayProcess,
    confusion: dict[str, Any],
    host: str,
    path: str,
    bucket: str,
    key: str,
) -> None:
    values = {
        "b": BUCKET,
        "other": confusion["other"],
        "OTHER": confusion["other"].upper(),
        "base": VHOST_BASE,
        "BASE": VHOST_BASE.upper(),
        "key": confusion["key"],
        "port": confusion["port"],
    }
    resp = _vhost_get(vhost, confusion["who"], host.format(**values), path.format(**values))
    assert resp.status == 403, resp.body
    assert resp.error_code == "AccessDenied"
    for secret in (b"granted document", b"other bucket secret", b"nested", b"other bucket nested"):
        assert secret not in resp.body
    event = vhost.event_for(resp.request_id or "")
    # The gateway decided on the bucket and key the upstream would have used, not on the path's look.
    assert (event["bucket"], event["key"]) == (bucket.format(**values), key.format(**values))
    assert event["upstream_status"] is None


def test_host_outside_the_virtual_host_base_is_path_style(
    vhost: GatewayProcess, confusion: dict[str, Any]
) -> None:
    for host in (
        f"{VHOST_BASE}:{confusion['port']}",
        f"{BUCKET}.{VHOST_BASE}.evil.example:{confusion['port']}",
    ):
        resp = _vhost_get(vhost, confusion["who"], host, f"/{BUCKET}/{confusion['key']}")
        assert resp.status == 200, (host, resp.body)
        assert resp.body == b"granted document"
        resp = _vhost_get(vhost, confusion["who"], host, f"/{confusion['other']}/{confusion['key']}")
        assert resp.status == 403, (host, resp.body)
        assert b"other bucket secret" not in resp.body


def test_request_signed_for_virtual_host_is_refused_when_replayed_path_style(
    vhost: GatewayProcess, confusion: dict[str, Any]
) -> None:
    client = raw(vhost, confusion["who"])
    vhost_host = f"{confusion['other']}.{VHOST_BASE}:{confusion['port']}"
    signed = client.sign("GET", "/" + confusion["key"], headers={"host": vhost_host})
    # Same signature, now aimed at the other bucket path-style through the plain host.
    replay = {**signed.headers, "host": f"127.0.0.1:{confusion['port']}"}
    resp = client.send("GET", f"/{confusion['other']}/{confusion['key']}", replay)
    assert resp.status == 403
    assert resp.error_code == "SignatureDoesNotMatch"
    assert b"other bucket secret" not in resp.body


# ---------------------------------------------------------------- presigned URLs and methods


def _fetch(url: str, method: str, data: bytes | None = None) -> tuple[int, bytes]:
    # urllib labels any body as a form, which moto then parses away: say it is bytes.
    headers = {"Content-Type": "application/octet-stream"} if data else {}
    req = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_presigned_url_used_with_another_method_is_refused(world: World, unique: str) -> None:
    victor = world.person(f"presign-{unique}")
    key = f"presign-{unique}/report.bin"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"quarterly numbers")
    # Every action granted: any refusal below is the signature binding the method, not a missing grant.
    world.grant(victor, f"s3://{BUCKET}/presign-{unique}/", "read,write,delete,list")
    s3: Any = world.client(victor, signature_version="s3v4")
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key})
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key})

    for method, data in (("PUT", b"overwritten"), ("DELETE", None), ("POST", b"")):
        status, body = _fetch(get_url, method, data)
        assert status == 403, (method, body)
        assert b"<Code>SignatureDoesNotMatch</Code>" in body
    status, body = _fetch(put_url, "GET")
    assert status == 403
    assert b"quarterly numbers" not in body
    assert upstream_body(world, key) == b"quarterly numbers"
    # The control: used as signed, both work.
    assert _fetch(get_url, "GET") == (200, b"quarterly numbers")
    assert _fetch(put_url, "PUT", b"new numbers")[0] == 200
    assert upstream_body(world, key) == b"new numbers"
