"""Workload identity end to end: boto3's STS client against the real gateway, tokens from a local issuer."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from support.workload import ROLE_ARN, Issuer, running_issuer, sts_gateway, sync_gateway
from support.world import BUCKET, GatewayProcess, Identity, World

TRAINER = "system:serviceaccount:ml:trainer"
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    world: World, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with sts_gateway(world, issuer, tmp_path_factory.mktemp("sts")) as running:
        yield running


def sts_client(gateway: GatewayProcess) -> Any:
    # No credentials at all: AssumeRoleWithWebIdentity is an unsigned call.
    return boto3.client(
        "sts",
        endpoint_url=gateway.s3_url,
        region_name="us-east-1",
        aws_access_key_id=None,
        aws_secret_access_key=None,
        config=Config(signature_version=botocore_unsigned(), retries={"max_attempts": 1, "mode": "standard"}),
    )


def botocore_unsigned() -> Any:
    from botocore import UNSIGNED

    return UNSIGNED


def assume(gateway: GatewayProcess, token: str, **extra: Any) -> dict[str, Any]:
    return sts_client(gateway).assume_role_with_web_identity(
        RoleArn=ROLE_ARN, RoleSessionName="trainer-run-1", WebIdentityToken=token, **extra
    )


def s3_with(gateway: GatewayProcess, creds: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=gateway.s3_url,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        config=NO_RETRY,
    )


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def workload(subject: str) -> str:
    """The principal the trust rules make of a subject: always in the workload namespace."""
    return "wl:" + subject


def grant(world: World, gateway: GatewayProcess, principal: str, resource: str, actions: str) -> Any:
    made = world.grant(Identity(workload(principal), "", ""), resource, actions)
    sync_gateway(world, gateway)
    return made


def test_token_exchanged_with_boto3_reads_an_object_and_audit_names_the_workload(
    world: World, gateway: GatewayProcess, issuer: Issuer, unique: str
) -> None:
    principal = f"system:serviceaccount:ml:trainer-{unique}"
    world.upstream().put_object(Bucket=BUCKET, Key=f"models/{unique}/w.safetensors", Body=b"weights!")
    made = grant(world, gateway, principal, f"s3://{BUCKET}/models/{unique}/", "read")

    before = datetime.now(UTC)
    answer = assume(gateway, issuer.token(principal))
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("GGT")
    assert answer["SubjectFromWebIdentityToken"] == principal
    assert answer["Audience"] == "grantgate"
    assert answer["Provider"] == issuer.url
    assert answer["AssumedRoleUser"]["Arn"].endswith("/grantgate-workload/trainer-run-1")
    # The configured default lifetime (1800 s) when no DurationSeconds is asked for.
    lifetime = creds["Expiration"] - before
    assert timedelta(seconds=1790) <= lifetime <= timedelta(seconds=1810)

    resp = s3_with(gateway, creds).get_object(Bucket=BUCKET, Key=f"models/{unique}/w.safetensors")
    assert resp["Body"].read() == b"weights!"
    event = gateway.event_for(resp["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"])
    assert event["principal"] == workload(principal)
    assert event["groups"] == ["ml-jobs"]
    assert event["access_key_id"] == creds["AccessKeyId"]
    assert event["grant_ids"] == [made.id]
    sts_events = [
        e
        for e in gateway.events()
        if e["operation"] == "sts:AssumeRoleWithWebIdentity" and e["access_key_id"] == creds["AccessKeyId"]
    ]
    assert len(sts_events) == 1
    assert sts_events[0]["principal"] == workload(principal)
    assert sts_events[0]["decision"] == "allow"


def test_temporary_credentials_see_only_what_the_workload_was_granted(
    world: World, gateway: GatewayProcess, issuer: Issuer, unique: str
) -> None:
    principal = f"system:serviceaccount:ml:eval-{unique}"
    world.upstream().put_object(Bucket=BUCKET, Key=f"models/{unique}/secret.gguf", Body=b"x")
    creds = assume(gateway, issuer.token(principal))["Credentials"]
    with pytest.raises(ClientError) as exc:
        s3_with(gateway, creds).get_object(Bucket=BUCKET, Key=f"models/{unique}/secret.gguf")
    assert error_code(exc) == "AccessDenied"
    assert principal in exc.value.response["Error"]["Message"]


def test_token_for_wrong_audience_is_refused(gateway: GatewayProcess, issuer: Issuer) -> None:
    with pytest.raises(ClientError) as exc:
        assume(gateway, issuer.token(TRAINER, audience="https://kubernetes.default.svc"))
    assert error_code(exc) == "InvalidIdentityToken"
    assert "audience" in exc.value.response["Error"]["Message"]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_expired_token_is_refused(gateway: GatewayProcess, issuer: Issuer) -> None:
    with pytest.raises(ClientError) as exc:
        assume(gateway, issuer.token(TRAINER, lifetime=600, issued_ago=700))
    assert error_code(exc) == "ExpiredTokenException"


def test_token_from_unknown_issuer_is_refused(gateway: GatewayProcess, issuer: Issuer) -> None:
    with pytest.raises(ClientError) as exc:
        assume(gateway, issuer.token(TRAINER, issuer="https://evil.example.com"))
    assert error_code(exc) == "InvalidIdentityToken"
    assert "evil.example.com" in exc.value.response["Error"]["Message"]


def test_token_signed_by_another_key_is_refused(gateway: GatewayProcess, issuer: Issuer) -> None:
    from joserfc.jwk import RSAKey

    forger = RSAKey.generate_key(2048, parameters={"kid": issuer.keys[0].kid})
    with pytest.raises(ClientError) as exc:
        assume(gateway, issuer.token(TRAINER, key=forger))
    assert error_code(exc) == "InvalidIdentityToken"


def test_subject_no_rule_trusts_is_denied(gateway: GatewayProcess, issuer: Issuer) -> None:
    with pytest.raises(ClientError) as exc:
        assume(gateway, issuer.token("system:serviceaccount:kube-system:default"))
    assert error_code(exc) == "AccessDenied"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_rule_maps_claims_to_principal_template_and_groups(gateway: GatewayProcess, issuer: Issuer) -> None:
    token = issuer.token("pipeline-nightly", extra={"groups": ["etl", "has space"]})
    response = assume(gateway, token)
    # The audit line is written just after the answer: wait for it by the call's request id.
    event = gateway.event_for(response["ResponseMetadata"]["RequestId"])
    assert (event["operation"], event["access_key_id"]) == (
        "sts:AssumeRoleWithWebIdentity",
        response["Credentials"]["AccessKeyId"],
    )
    assert event["principal"] == "wl:ci:pipeline-nightly"
    assert event["groups"] == ["etl"]


def test_requested_duration_is_capped(gateway: GatewayProcess, issuer: Issuer) -> None:
    before = datetime.now(UTC)
    creds = assume(gateway, issuer.token(TRAINER), DurationSeconds=43200)["Credentials"]
    assert creds["Expiration"] - before <= timedelta(seconds=3610)


def test_key_rotation_is_followed(gateway: GatewayProcess, issuer: Issuer) -> None:
    new_key = issuer.rotate()
    fetches = issuer.fetches
    # The gateway refetches for an unknown kid at most every 10 s; wait that out if needed.
    deadline = time.monotonic() + 15
    while True:
        try:
            answer = assume(gateway, issuer.token(TRAINER, key=new_key))
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert answer["Credentials"]["AccessKeyId"].startswith("GGT")
    assert issuer.fetches > fetches


def test_tampered_session_token_is_refused(
    world: World, gateway: GatewayProcess, issuer: Issuer, unique: str
) -> None:
    principal = f"system:serviceaccount:ml:tamper-{unique}"
    grant(world, gateway, principal, f"s3://{BUCKET}/models/{unique}/", "list")
    creds = assume(gateway, issuer.token(principal))["Credentials"]
    token = creds["SessionToken"]
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    with pytest.raises(ClientError) as exc:
        s3_with(gateway, {**creds, "SessionToken": flipped}).list_objects_v2(
            Bucket=BUCKET, Prefix=f"models/{unique}/"
        )
    assert error_code(exc) == "InvalidToken"
    # The untouched token still works: the refusal was the tampering, not the grant.
    s3_with(gateway, creds).list_objects_v2(Bucket=BUCKET, Prefix=f"models/{unique}/")


def test_revoking_a_grant_invalidates_the_principals_sessions(
    world: World, gateway: GatewayProcess, issuer: Issuer, unique: str
) -> None:
    principal = f"system:serviceaccount:ml:revoked-{unique}"
    world.upstream().put_object(Bucket=BUCKET, Key=f"data/{unique}/a.jsonl", Body=b"{}")
    listing = grant(world, gateway, principal, f"s3://{BUCKET}/data/{unique}/", "list")
    reading = grant(world, gateway, principal, f"s3://{BUCKET}/data/{unique}/", "read")
    old = assume(gateway, issuer.token(principal))["Credentials"]
    s3_with(gateway, old).get_object(Bucket=BUCKET, Key=f"data/{unique}/a.jsonl")

    world.revoke(listing)
    sync_gateway(world, gateway)
    # The read grant is still active, yet the session minted before the revocation is dead.
    with pytest.raises(ClientError) as exc:
        s3_with(gateway, old).get_object(Bucket=BUCKET, Key=f"data/{unique}/a.jsonl")
    assert error_code(exc) == "InvalidToken"

    fresh = assume(gateway, issuer.token(principal))["Credentials"]
    body = s3_with(gateway, fresh).get_object(Bucket=BUCKET, Key=f"data/{unique}/a.jsonl")["Body"].read()
    assert body == b"{}"
    assert reading.id


def test_other_sts_actions_are_not_served(gateway: GatewayProcess) -> None:
    request = urllib.request.Request(
        gateway.s3_url + "/",
        data=b"Action=GetCallerIdentity&Version=2011-06-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(request, timeout=5)
    body = exc.value.read().decode()
    assert exc.value.code == 400
    assert "<ErrorResponse" in body
    assert "<Code>InvalidAction</Code>" in body


def test_listener_without_sts_treats_the_form_post_as_s3(world: World, issuer: Issuer) -> None:
    form = f"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={ROLE_ARN}"
    request = urllib.request.Request(
        world.http.s3_url + "/",
        data=f"{form}&RoleSessionName=x1&WebIdentityToken={issuer.token(TRAINER)}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(request, timeout=5)
    body = exc.value.read().decode()
    # No [sts] there: the unsigned POST is an anonymous S3 request, and refused as one, in S3's XML.
    assert exc.value.code == 403
    assert "<Code>AccessDenied</Code>" in body
    assert "ErrorResponse" not in body
    assert "GGT" not in body


def test_web_identity_env_of_a_pod_works_with_stock_boto3(
    world: World, gateway: GatewayProcess, issuer: Issuer, unique: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """What a pod without the sidecar does: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ENDPOINT_URL_STS."""
    principal = f"system:serviceaccount:ml:native-{unique}"
    world.upstream().put_object(Bucket=BUCKET, Key=f"models/{unique}/n.bin", Body=b"native")
    grant(world, gateway, principal, f"s3://{BUCKET}/models/{unique}/", "read")
    token_file = tmp_path / "token"
    token_file.write_text(issuer.token(principal))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "native")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", gateway.s3_url)
    s3 = boto3.session.Session(region_name="us-east-1").client(
        "s3", endpoint_url=gateway.s3_url, config=NO_RETRY
    )
    assert s3.get_object(Bucket=BUCKET, Key=f"models/{unique}/n.bin")["Body"].read() == b"native"
