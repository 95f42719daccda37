"""ListBuckets answered from the caller's grants: which buckets show, paging, and the XML S3 clients parse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import botocore.session
import pytest
from botocore.model import ServiceModel
from botocore.parsers import RestXMLParser

from proxy.access.grants import Action, Grant
from proxy.access.index import GrantIndex
from proxy.errors import S3Error
from proxy.s3.bucketlist import page, to_xml, visible

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def grant(gid: str, principal: str, bucket: str, **fields: object) -> Grant:
    values: dict[str, object] = {
        "prefix": "models/",
        "actions": frozenset({Action.READ}),
        "created_at": NOW - timedelta(days=1),
        "expires_at": NOW + timedelta(hours=1),
    }
    values.update(fields)
    return Grant(gid, principal, bucket, **values)  # type: ignore[arg-type]


def test_only_buckets_with_an_active_grant_of_the_caller_are_held() -> None:
    index = GrantIndex.build(
        [
            grant("g1", "ada", "weights"),
            grant("g2", "ada", "evals", prefix="sets/x/"),
            grant("g3", "bob", "hidden"),
            grant("g4", "ada", "expired", expires_at=NOW - timedelta(seconds=1)),
            grant("g5", "ada", "revoked", revoked_at=NOW - timedelta(minutes=1)),
            grant("g6", "ada", "later", starts_at=NOW + timedelta(hours=2)),
        ]
    )
    held = index.buckets_held("ada", NOW)
    assert list(held) == ["evals", "weights"]
    assert index.buckets_held("carol", NOW) == {}


def test_a_bucket_whose_grants_cannot_be_used_from_here_is_hidden() -> None:
    held = {"a": (grant("g1", "ada", "a"),), "b": (grant("g2", "ada", "b"),)}
    shown = visible(held, lambda g: g.bucket != "b")
    assert [b.name for b in shown] == ["a"]


def test_creation_date_is_when_access_began() -> None:
    early = grant("g1", "ada", "a", created_at=NOW - timedelta(days=3))
    scheduled = grant("g2", "ada", "a", created_at=NOW - timedelta(days=5), starts_at=NOW - timedelta(days=2))
    [listed] = visible({"a": (early, scheduled)}, lambda g: True)
    assert listed.since == NOW - timedelta(days=3)


def _names(params: dict[str, str], names: list[str]) -> tuple[list[str], str | None]:
    buckets = visible({n: (grant(n, "ada", n),) for n in names}, lambda g: True)
    listing = page(buckets, params, "us-east-1")
    return [b.name for b in listing.buckets], listing.next_token


def test_pages_follow_one_another_with_the_continuation_token() -> None:
    names = ["a", "b", "c", "d", "e"]
    seen: list[str] = []
    token: str | None = None
    while True:
        params = {"max-buckets": "2", **({"continuation-token": token} if token else {})}
        chunk, token = _names(params, names)
        seen += chunk
        if token is None:
            break
    assert seen == names


def test_prefix_and_region_filter() -> None:
    assert _names({"prefix": "ev"}, ["evals", "weights", "eval-2"])[0] == ["eval-2", "evals"]
    assert _names({"bucket-region": "eu-west-1"}, ["a"])[0] == []
    assert _names({"bucket-region": "us-east-1"}, ["a"])[0] == ["a"]


@pytest.mark.parametrize(
    "params",
    [{"max-buckets": "0"}, {"max-buckets": "x"}, {"max-buckets": "10001"}, {"continuation-token": "%"}],
)
def test_bad_parameters_are_invalid_argument(params: dict[str, str]) -> None:
    with pytest.raises(S3Error) as caught:
        _names(params, ["a"])
    assert caught.value.code == "InvalidArgument"


def test_answer_parses_as_boto3_parses_list_buckets() -> None:
    buckets = visible(
        {"we<ights": (grant("g1", "ada", "we<ights"),), "b": (grant("g2", "ada", "b"),)}, lambda g: True
    )
    body = to_xml(page(buckets, {"max-buckets": "1"}, "us-east-1"), "ada", "us-east-1")
    model: ServiceModel = botocore.session.get_session().get_service_model("s3")
    shape = model.operation_model("ListBuckets").output_shape
    parsed = RestXMLParser().parse({"status_code": 200, "headers": {}, "body": body}, shape)
    assert [b["Name"] for b in parsed["Buckets"]] == ["b"]
    assert parsed["Buckets"][0]["CreationDate"] == NOW - timedelta(days=1)
    assert parsed["Buckets"][0]["BucketRegion"] == "us-east-1"
    assert parsed["Owner"]["DisplayName"] == "ada"
    assert parsed["ContinuationToken"]
