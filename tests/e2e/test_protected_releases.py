"""Protected resources end to end: real gateway, boto3, the JSON API. Overwriting or deleting under a
protected resource needs a grant two distinct people approved, whatever the rule says (here, alice's
group is instant); a grant with fewer approvals may still create new objects there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError
from support.access import api
from support.world import BUCKET, World, running_world

POLICY = f"""
[policy]
sweep_interval_seconds = 0.2

[policy.resources.releases]
description = "Released model weights"
paths = ["s3://{BUCKET}/releases/"]
protected = true

[[policy.rules]]
resource = "releases"
requester_groups = ["ml"]
actions = ["read", "list", "create", "write", "delete"]
instant_groups = ["ml"]
approver_groups = ["security"]
approvals_required = 1
break_glass = true
"""

WHY = "retire the broken v3 release"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("protected-world"), extra_config=POLICY) as w:
        yield w


def _denied(exc: pytest.ExceptionInfo[ClientError]) -> str:
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    return str(exc.value.response["Error"]["Message"])


def test_protected_delete_is_refused_until_a_second_person_approves(world: World, unique: str) -> None:
    alice = world.person(f"alice-{unique}", ("ml",))
    carol = world.person(f"carol-{unique}", ("security",))
    dave = world.person(f"dave-{unique}", ("security",))
    key = f"releases/{unique}/v3.safetensors"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"broken weights")
    s3 = world.client(alice)

    status, created = api(
        world,
        world.api_token(alice),
        "POST",
        "/requests",
        {"resource": f"s3://{BUCKET}/releases/{unique}/", "actions": ["delete"], "justification": WHY},
    )
    # alice's group is instant on this rule, but not for deleting under a protected resource.
    assert status == 201 and created["status"] == "pending", created
    assert created["approvals_required"] == 2 and created["protected"] is True

    status, first = api(world, world.api_token(carol), "POST", f"/requests/{created['id']}/approve", {})
    assert status == 200 and first["status"] == "pending" and first["grant_id"] is None
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=BUCKET, Key=key)
    _denied(refused)
    assert world.upstream().head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(b"broken weights")

    status, second = api(world, world.api_token(dave), "POST", f"/requests/{created['id']}/approve", {})
    assert status == 200 and second["status"] == "approved", second
    assert second["grant"]["approvals"] == 2
    s3.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(ClientError) as gone:
        world.upstream().head_object(Bucket=BUCKET, Key=key)
    assert gone.value.response["Error"]["Code"] in ("404", "NoSuchKey")


def test_grant_without_two_approvals_creates_but_neither_overwrites_nor_deletes(
    world: World, unique: str
) -> None:
    bob = world.person(f"bob-{unique}", ("ml",))
    prefix = f"releases/{unique}/"
    world.upstream().put_object(Bucket=BUCKET, Key=prefix + "v1.bin", Body=b"released")
    # An admin's grant (no approvals) naming write and delete, as a rule edited after the fact might.
    world.grant(bob, f"s3://{BUCKET}/{prefix}", "read,write,delete")
    s3 = world.client(bob)

    with pytest.raises(ClientError) as deleted:
        s3.delete_object(Bucket=BUCKET, Key=prefix + "v1.bin")
    message = _denied(deleted)
    assert "is protected" in message and "approved by two people" in message
    with pytest.raises(ClientError) as overwritten:
        s3.put_object(Bucket=BUCKET, Key=prefix + "v1.bin", Body=b"tampered")
    assert overwritten.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as if_match:
        s3.put_object(Bucket=BUCKET, Key=prefix + "v1.bin", Body=b"tampered", IfMatch='"x"')
    _denied(if_match)
    assert world.upstream().get_object(Bucket=BUCKET, Key=prefix + "v1.bin")["Body"].read() == b"released"

    s3.put_object(Bucket=BUCKET, Key=prefix + "v2.bin", Body=b"new release")  # creating is fine
    assert s3.get_object(Bucket=BUCKET, Key=prefix + "v2.bin")["Body"].read() == b"new release"


def test_break_glass_cannot_delete_under_a_protected_resource(world: World, unique: str) -> None:
    alice = world.person(f"alice-bg-{unique}", ("ml",))
    token = world.api_token(alice)
    resource = f"s3://{BUCKET}/releases/{unique}/"
    status, refused = api(
        world,
        token,
        "POST",
        "/requests",
        {"resource": resource, "actions": ["delete"], "justification": WHY, "break_glass": True},
    )
    assert status == 422 and refused["code"] == "protected_resource", refused
    assert "break-glass" in refused["detail"]
    # Reading stays instant for alice's group.
    status, read = api(
        world, token, "POST", "/requests", {"resource": resource, "actions": ["read"], "justification": WHY}
    )
    assert status == 201 and read["status"] == "approved"
