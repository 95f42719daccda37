"""ListBuckets through the real gateway: the caller's granted buckets, never AccessDenied, never keys."""

from __future__ import annotations

from pathlib import Path

from support.awscli import cli_for
from support.world import BUCKET, World


def test_boto3_list_buckets_shows_only_granted_buckets(world: World, unique: str, tls: bool) -> None:
    ada, bob = world.person(f"lb-ada-{unique}"), world.person(f"lb-bob-{unique}")
    s3 = world.client(ada, tls=tls)
    assert s3.list_buckets()["Buckets"] == []  # no grant: an empty list, not AccessDenied

    evals = f"evals-{unique}"  # granted but absent upstream: listed all the same (see bucketlist.py)
    world.grant(ada, f"s3://{BUCKET}/lb/{unique}/", "read")
    granted = world.grant(ada, f"s3://{evals}/sets/", "list")
    world.grant(bob, f"s3://hidden-{unique}/", "read,list")
    answer = s3.list_buckets()
    assert sorted(b["Name"] for b in answer["Buckets"]) == sorted([BUCKET, evals])
    assert answer["Owner"]["DisplayName"] == ada.name

    pages = s3.get_paginator("list_buckets").paginate(PaginationConfig={"PageSize": 1})
    assert [b["Name"] for p in pages for b in p["Buckets"]] == sorted([BUCKET, evals])

    event = (world.https if tls else world.http).event_for(answer["ResponseMetadata"]["RequestId"])
    assert (event["operation"], event["decision"], event["status"]) == ("ListBuckets", "allow", 200)
    assert granted.id in event["grant_ids"] and event["upstream_status"] is None

    world.revoke(granted)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [BUCKET]


def test_aws_s3_ls_lists_granted_buckets_and_no_keys(world: World, unique: str, tmp_path: Path) -> None:
    cleo = world.person(f"lb-cleo-{unique}")
    cli = cli_for(world, cleo, False, tmp_path / "home")
    assert cli.ok("s3", "ls") == ""  # no grant: nothing, and exit 0

    world.upstream().put_object(Bucket=BUCKET, Key=f"lb/{unique}/weights.bin", Body=b"w")
    world.grant(cleo, f"s3://{BUCKET}/lb/{unique}/", "read")
    lines = cli.ok("s3", "ls").splitlines()
    assert [line.split()[-1] for line in lines] == [BUCKET]
    assert "weights.bin" not in "".join(lines)
