"""A grant on a resource with source networks is refused from anywhere else, end to end."""

from __future__ import annotations

import secrets

import boto3
import pytest
from botocore.exceptions import ClientError
from support.gateways import extra_gateway
from support.world import BUCKET, World

POLICY = f"""
[policy.resources.vault]
paths = ["s3://{BUCKET}/vault/"]

[[policy.rules]]
resource = "vault"
approver_groups = ["security"]
source_cidrs = ["10.20.0.0/16"]
"""


def test_grant_is_refused_outside_its_networks_and_honoured_via_trusted_proxy(world: World) -> None:
    unique = secrets.token_hex(4)
    world.upstream().put_object(Bucket=BUCKET, Key=f"vault/{unique}/w", Body=b"weights")
    vera = world.person(f"vera-{unique}")
    world.grant(vera, f"s3://{BUCKET}/vault/{unique}/", "read")
    server = 'trusted_proxies = ["127.0.0.1"]'
    with extra_gateway(world, f"nets-{unique}", world.upstream_url, server=server, sections=POLICY) as gw:
        direct = boto3.client(
            "s3",
            endpoint_url=gw.s3_url,
            aws_access_key_id=vera.access_key_id,
            aws_secret_access_key=vera.secret_access_key,
            region_name="us-east-1",
        )
        with pytest.raises(ClientError) as exc:
            direct.get_object(Bucket=BUCKET, Key=f"vault/{unique}/w")
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
        assert "cannot be used from 127.0.0.1" in exc.value.response["Error"]["Message"]

        # Behind the (trusted) load balancer the client's own address is the one that counts.
        def from_inside(request, **_kwargs):  # type: ignore[no-untyped-def]
            request.headers["X-Forwarded-For"] = "10.20.3.4"

        direct.meta.events.register("before-send.s3.GetObject", from_inside)
        assert direct.get_object(Bucket=BUCKET, Key=f"vault/{unique}/w")["Body"].read() == b"weights"
