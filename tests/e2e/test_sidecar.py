"""The sidecar end to end on loopback: job (placeholder credentials) -> sidecar -> gateway -> moto."""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from support.observed import eventually
from support.rawclient import RawClient
from support.workload import (
    Issuer,
    SidecarProcess,
    running_issuer,
    running_sidecar,
    sts_gateway,
    sync_gateway,
)
from support.world import BUCKET, GatewayProcess, Identity, World

from proxy.s3 import sigv4

WORKLOAD = "system:serviceaccount:ml:trainer-sidecar"
PRINCIPAL = "wl:" + WORKLOAD  # what the trust rules make of it
DECOY = "sidecar-models/llama-3-70b-instruct/model-00001-of-00030.safetensors"
DECOYS = f"""
[policy.resources.sidecar-models]
paths = ["s3://{BUCKET}/sidecar-models/"]
decoys = ["s3://{BUCKET}/{DECOY}"]
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sidecar")


@pytest.fixture(scope="module")
def gateway(world: World, issuer: Issuer, directory: Path) -> Iterator[GatewayProcess]:
    with sts_gateway(world, issuer, directory, sections=DECOYS) as running:
        yield running


@pytest.fixture(scope="module")
def token_file(issuer: Issuer, directory: Path) -> Path:
    path = directory / "token"
    path.write_text(issuer.token(WORKLOAD))
    return path


@pytest.fixture(scope="module")
def sidecar(gateway: GatewayProcess, token_file: Path, directory: Path) -> Iterator[SidecarProcess]:
    with running_sidecar(gateway, token_file, directory) as running:
        yield running


def job_client(sidecar: SidecarProcess, **config: Any) -> Any:
    """What the training job runs: stock boto3, placeholder credentials, endpoint_url at the sidecar."""
    return boto3.client(
        "s3",
        endpoint_url=sidecar.url,
        region_name="us-east-1",
        aws_access_key_id="placeholder",
        aws_secret_access_key="placeholder",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
    )


def grant(world: World, gateway: GatewayProcess, resource: str, actions: str) -> Any:
    made = world.grant(Identity(PRINCIPAL, "", ""), resource, actions)
    sync_gateway(world, gateway)
    return made


def test_job_downloads_weights_through_the_sidecar_and_audit_names_the_workload(
    world: World, gateway: GatewayProcess, sidecar: SidecarProcess, unique: str
) -> None:
    weights = secrets.token_bytes(5 * 1024 * 1024 + 3)
    world.upstream().put_object(Bucket=BUCKET, Key=f"models/{unique}/model.safetensors", Body=weights)
    made = grant(world, gateway, f"s3://{BUCKET}/models/{unique}/", "read,list")

    s3 = job_client(sidecar)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"models/{unique}/")
    assert [o["Key"] for o in listed["Contents"]] == [f"models/{unique}/model.safetensors"]
    resp = s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/model.safetensors")
    assert hashlib.sha256(resp["Body"].read()).digest() == hashlib.sha256(weights).digest()
    ranged = s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/model.safetensors", Range="bytes=10-19")
    assert ranged["Body"].read() == weights[10:20]

    event = gateway.event_for(resp["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"])
    assert event["principal"] == PRINCIPAL
    assert event["access_key_id"].startswith("GGT")
    assert event["grant_ids"] == [made.id]
    assert event["bytes_out"] == len(weights)


def test_job_uploads_a_checkpoint_plain_and_multipart(
    world: World, gateway: GatewayProcess, sidecar: SidecarProcess, unique: str, tmp_path: Path
) -> None:
    grant(world, gateway, f"s3://{BUCKET}/checkpoints/{unique}/", "write,read")
    s3 = job_client(sidecar)
    small = secrets.token_bytes(300 * 1024)
    s3.put_object(Bucket=BUCKET, Key=f"checkpoints/{unique}/step-1.pt", Body=small)
    stored = world.upstream().get_object(Bucket=BUCKET, Key=f"checkpoints/{unique}/step-1.pt")["Body"].read()
    assert stored == small

    big = secrets.token_bytes(12 * 1024 * 1024 + 11)
    path = tmp_path / "step-2.pt"
    path.write_bytes(big)
    transfer = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_file(str(path), BUCKET, f"checkpoints/{unique}/step-2.pt", Config=transfer)
    stored = world.upstream().get_object(Bucket=BUCKET, Key=f"checkpoints/{unique}/step-2.pt")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(big).digest()

    writes = [
        e
        for e in gateway.events()
        if e["principal"] == PRINCIPAL and e["key"] and e["key"].startswith(f"checkpoints/{unique}/")
    ]
    assert {e["operation"] for e in writes} >= {
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
    }
    assert all(e["decision"] == "allow" for e in writes)


@pytest.mark.parametrize(
    "mode", [sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER]
)
def test_aws_chunked_uploads_from_the_job_are_resigned(
    world: World, gateway: GatewayProcess, sidecar: SidecarProcess, unique: str, mode: str
) -> None:
    """SDKs that stream signed chunks (the Java SDK, Hadoop s3a) sign them with the placeholder key."""
    grant(world, gateway, f"s3://{BUCKET}/chunked/{unique}/", "write")
    payload = secrets.token_bytes(200 * 1024 + 5)
    job = RawClient(sidecar.url, "placeholder", "placeholder-secret")
    resp = job.put_aws_chunked(
        f"/{BUCKET}/chunked/{unique}/blob.bin", payload, mode=mode, chunk_size=64 * 1024
    )
    assert resp.status == 200, resp.body
    stored = world.upstream().get_object(Bucket=BUCKET, Key=f"chunked/{unique}/blob.bin")["Body"].read()
    assert stored == payload


def test_refusals_pass_through_with_the_request_link(
    gateway: GatewayProcess, sidecar: SidecarProcess, unique: str
) -> None:
    s3 = job_client(sidecar)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=BUCKET, Key=f"secret/{unique}/weights.gguf")
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    assert WORKLOAD in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as head:
        s3.head_object(Bucket=BUCKET, Key=f"secret/{unique}/weights.gguf")
    assert head.value.response["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-url"].startswith(
        gateway.control_url
    )


def test_denied_upload_is_refused_and_the_object_not_written(
    world: World, sidecar: SidecarProcess, unique: str
) -> None:
    s3 = job_client(sidecar)
    with pytest.raises(ClientError) as exc:
        s3.put_object(
            Bucket=BUCKET, Key=f"models/{unique}/poisoned.gguf", Body=secrets.token_bytes(2 * 1024 * 1024)
        )
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        world.upstream().head_object(Bucket=BUCKET, Key=f"models/{unique}/bad.gguf")


def test_sidecar_obtains_new_credentials_after_its_session_is_revoked(
    world: World, gateway: GatewayProcess, sidecar: SidecarProcess, unique: str
) -> None:
    world.upstream().put_object(Bucket=BUCKET, Key=f"datasets/{unique}/part-0.parquet", Body=b"rows")
    reading = grant(world, gateway, f"s3://{BUCKET}/datasets/{unique}/", "read")
    listing = grant(world, gateway, f"s3://{BUCKET}/datasets/{unique}/", "list")
    s3 = job_client(sidecar)
    first = s3.get_object(Bucket=BUCKET, Key=f"datasets/{unique}/part-0.parquet")
    first_key = gateway.event_for(first["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"])[
        "access_key_id"
    ]

    world.revoke(listing)  # ends the workload's sessions; its read grant stays
    sync_gateway(world, gateway)
    again = s3.get_object(Bucket=BUCKET, Key=f"datasets/{unique}/part-0.parquet")
    assert again["Body"].read() == b"rows"
    event = gateway.event_for(again["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"])
    assert event["access_key_id"] != first_key
    assert event["grant_ids"] == [reading.id]
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=BUCKET, Prefix=f"datasets/{unique}/")
    assert exc.value.response["Error"]["Code"] == "AccessDenied"


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "rebound.evil.example"},  # DNS rebinding: the page's own name, now on 127.0.0.1
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
    ],
)
def test_requests_a_browser_could_send_are_refused_without_reaching_the_gateway(
    world: World, gateway: GatewayProcess, sidecar: SidecarProcess, unique: str, headers: dict[str, str]
) -> None:
    key = f"models/{unique}/weights.bin"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"weights")
    grant(world, gateway, f"s3://{BUCKET}/models/{unique}/", "read")
    assert job_client(sidecar).get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"weights"
    port = urlsplit(sidecar.url).port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", f"/{BUCKET}/{key}", skip_host="Host" in headers)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    assert answer.status == 403 and b"<Code>AccessDenied</Code>" in body and b"weights" not in body
    assert answer.getheader("Content-Type") == "application/xml"


def test_health_endpoints_do_not_reach_the_gateway(sidecar: SidecarProcess) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(sidecar.url + "/_grantgate/readyz", timeout=5) as resp:
        assert json.load(resp) == {"status": "ready"}


def test_a_decoy_read_through_the_sidecar_fires_and_suspends_the_workload(
    world: World, gateway: GatewayProcess, issuer: Issuer, directory: Path, unique: str
) -> None:
    """A workload of its own (its own sidecar): the suspension takes every grant of its principal."""
    workload = f"system:serviceaccount:ml:thief-{unique}"
    token_file = directory / f"token-{unique}"
    token_file.write_text(issuer.token(workload))
    world.upstream().put_object(Bucket=BUCKET, Key=DECOY, Body=secrets.token_bytes(64 * 1024))
    real = f"sidecar-models/{unique}/model.safetensors"
    world.upstream().put_object(Bucket=BUCKET, Key=real, Body=b"weights")
    world.grant(Identity("wl:" + workload, "", ""), f"s3://{BUCKET}/sidecar-models/", "read,list")
    sync_gateway(world, gateway)
    with running_sidecar(gateway, token_file, directory) as thief:
        s3 = job_client(thief)
        assert s3.get_object(Bucket=BUCKET, Key=real)["Body"].read() == b"weights"
        assert len(s3.get_object(Bucket=BUCKET, Key=DECOY, Range="bytes=0-7")["Body"].read()) == 8

        def refused() -> bool:
            try:
                s3.head_object(Bucket=BUCKET, Key=real)
            except ClientError as err:
                return err.response["Error"]["Code"] == "403"
            return False

        eventually(refused, timeout=1.0, what="the workload's grants suspended")

    def alerts() -> list[dict[str, Any]]:
        records = [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line[:1] == "{"]
        return [
            r for r in records if r.get("event") == "anomaly_alert" and r.get("principal") == "wl:" + workload
        ]

    [alert] = eventually(alerts, timeout=5)
    assert alert["kind"] == "decoy_touched" and alert["response"] == "suspend_principal"
    assert alert["details"]["decoy"] == f"s3://{BUCKET}/{DECOY}"
