"""Read-your-writes: once the API on a gateway says a grant exists (or was revoked), that gateway's S3
listener, every worker of it, already honours it on the very next request.

The gateways here poll the store only every 30 s (SQLite has no notifications), so nothing but the
workflow's own hand-off can make the next request right: without it, the first read is refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from support.access import api
from support.gateways import extra_gateway
from support.world import BUCKET, GatewayProcess, Identity, World, running_world

POLICY = f"""
[policy]
[policy.resources.checkpoints]
paths = ["s3://{BUCKET}/ryw/"]

[[policy.rules]]
resource = "checkpoints"
requester_groups = ["infra"]
actions = ["read"]
instant_groups = ["infra"]
justification_required = false
approver_groups = ["security"]
"""
# Fresh connections each, so the kernel spreads them over the workers: with two workers, all of them
# landing on worker 0 has odds of 2**-12.
ROUNDS = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("ryw-world"), extra_config=POLICY) as w:
        yield w


@pytest.fixture(scope="module")
def people(world: World) -> list[tuple[Identity, str]]:
    """Made before the gateways start: they load keys on their 30 s poll, or at start."""
    return [(who := world.person(f"bob-ryw-{n}", ("infra",)), world.api_token(who)) for n in range(ROUNDS)]


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def gateway(
    request: pytest.FixtureRequest, world: World, people: list[tuple[Identity, str]]
) -> Iterator[GatewayProcess]:
    with extra_gateway(
        world,
        f"ryw-{request.param}",
        world.upstream_url,
        sections=POLICY,
        refresh_interval=30.0,
        workers=request.param,
    ) as gateway:
        yield gateway


def fresh_client(gateway: GatewayProcess, who: Identity):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=gateway.s3_url,
        aws_access_key_id=who.access_key_id,
        aws_secret_access_key=who.secret_access_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def get_status(gateway: GatewayProcess, who: Identity, key: str) -> int:
    try:
        fresh_client(gateway, who).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except ClientError as err:
        return int(err.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def test_an_instant_grant_and_its_revocation_hold_on_the_very_next_s3_request(
    world: World, gateway: GatewayProcess, people: list[tuple[Identity, str]], unique: str
) -> None:
    key = f"ryw/{unique}/model.safetensors"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"weights")
    for round_, (bob, token) in enumerate(people):
        assert get_status(gateway, bob, key) == 403

        status, created = api(
            world,
            token,
            "POST",
            "/requests",
            {"resource": f"s3://{BUCKET}/ryw/", "actions": ["read"], "duration": "1h"},
            base=gateway.control_url,
        )
        assert status == 201 and created["status"] == "approved", created
        assert get_status(gateway, bob, key) == 200, f"round {round_}: granted, yet refused"

        status, revoked = api(
            world, token, "DELETE", f"/grants/{created['grant_id']}", base=gateway.control_url
        )
        assert status == 200 and revoked["revoked_at"], revoked
        assert get_status(gateway, bob, key) == 403, f"round {round_}: revoked, yet allowed"
