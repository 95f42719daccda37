"""The sidecar's outbound request: the job's auth replaced, verified by the gateway's own SigV4 code."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict

from proxy.errors import S3Error
from proxy.s3 import sigv4
from proxy.s3.request import RequestHead
from proxy.s3.upstream import Credentials
from proxy.sidecar import outbound
from proxy.sidecar.server import parse_listen

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POD = Credentials("GGTPODKEY00000000000", "pod-secret", "ggs1.token")
GATEWAY = "grantgate.ml-platform.svc:9000"


def job_request(method: str, target: str, extra: dict[str, str] | None = None) -> RequestHead:
    path = target.partition("?")[0]
    headers = {"host": "127.0.0.1:9000", "x-amz-content-sha256": sigv4.UNSIGNED_PAYLOAD, **(extra or {})}
    added = sigv4.sign(
        method,
        path,
        RequestHead.build(method, target, []).query,
        headers,
        headers["x-amz-content-sha256"],
        access_key_id="placeholder",
        secret="placeholder",
        session_token=None,
        region="us-east-1",
        now=NOW,
    )
    return RequestHead.build(method, target, CIMultiDict({**headers, **added, "User-Agent": "Boto3/1.x"}))


def as_received(method: str, raw_path: str, out: outbound.Outbound) -> RequestHead:
    query = sigv4.canonical_query(out.query)
    return RequestHead.build(method, raw_path + (f"?{query}" if query else ""), CIMultiDict(out.headers))


def verify_at_gateway(head: RequestHead, secret: str = POD.secret_access_key) -> sigv4.SignedRequest:
    signed = sigv4.parse_auth(head)
    sigv4.verify(head, signed, secret, NOW, host=GATEWAY)
    return signed


def test_outbound_request_carries_the_pods_credentials_and_verifies() -> None:
    head = job_request("GET", "/bucket/models/w%20x.gguf?versionId=3", {"range": "bytes=0-9"})
    out = outbound.build(head, POD, host=GATEWAY, region="us-east-1", now=NOW)
    received = as_received("GET", head.raw_path, out)
    signed = verify_at_gateway(received)
    assert signed.access_key_id == POD.access_key_id
    assert signed.security_token == POD.session_token
    assert "range" in signed.signed_headers
    assert out.headers["user-agent"] == "Boto3/1.x"
    assert "user-agent" not in signed.signed_headers
    assert out.resign is None


def test_the_jobs_placeholder_signature_does_not_pass_at_the_gateway() -> None:
    head = job_request("GET", "/bucket/models/w.gguf")
    with pytest.raises(S3Error):
        verify_at_gateway(
            RequestHead.build("GET", head.raw_path, CIMultiDict({**head.headers, "host": GATEWAY}))
        )


def test_presigned_url_from_the_job_goes_on_header_signed() -> None:
    head = RequestHead.build(
        "GET",
        "/bucket/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=placeholder%2F20300101%2Fus-east-1%2Fs3"
        "%2Faws4_request&X-Amz-Date=20300101T120000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=" + "0" * 64 + "&partNumber=1",
        CIMultiDict({"host": "127.0.0.1:9000"}),
    )
    out = outbound.build(head, POD, host=GATEWAY, region="us-east-1", now=NOW)
    assert out.query == (("partNumber", "1"),)
    assert out.payload_hash == sigv4.UNSIGNED_PAYLOAD
    assert not verify_at_gateway(as_received("GET", "/bucket/k", out)).presigned


def test_signed_streaming_upload_gets_a_resign_key_chained_from_the_new_seed() -> None:
    head = job_request(
        "PUT",
        "/bucket/ckpt",
        {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": "5"},
    )
    head = RequestHead.build(
        "PUT", head.raw_path, CIMultiDict({**head.headers, "x-amz-content-sha256": sigv4.STREAMING_SIGNED})
    )
    out = outbound.build(head, POD, host=GATEWAY, region="eu-west-1", now=NOW)
    assert out.payload_hash == sigv4.STREAMING_SIGNED
    signed = sigv4.parse_auth(as_received("PUT", "/bucket/ckpt", out))
    assert out.resign is not None
    assert out.resign.seed_signature == signed.signature
    assert out.resign.scope == signed.scope
    assert out.resign.signing_key == sigv4.signing_key(POD.secret_access_key, "20300101", "eu-west-1")


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:9000", "10.1.2.3:9000", "example.com:9000", "127.0.0.1", "127.0.0.1:0"]
)
def test_sidecar_refuses_to_listen_beyond_loopback(listen: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(listen)


def test_loopback_addresses_are_accepted() -> None:
    assert parse_listen("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    assert parse_listen("localhost:9000") == ("localhost", 9000)
