"""On call approves at once: a rule names a PagerDuty service, and whoever PagerDuty (a local stand-in
speaking its REST API) says is on call for it is granted without waiting; everyone else, and everyone
while PagerDuty cannot be reached, waits for approval as usual. Through the API on a real gateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.access import api, read
from support.fake_pagerduty import TOKEN, FakePagerDuty, oncall_entry, running_pagerduty
from support.world import BUCKET, World, running_world


@pytest.fixture(scope="module")
def pagerduty() -> Iterator[FakePagerDuty]:
    with running_pagerduty() as fake:
        fake.services["PSVCML1"] = "PEPML1"
        fake.services["PSVCEV1"] = "PEPEV1"
        yield fake


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pagerduty: FakePagerDuty) -> Iterator[World]:
    config = f"""
[policy]
[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
actions = ["read"]
approver_groups = ["security"]
justification_required = false
oncall_service = "PSVCML1"

[policy.resources.evals]
paths = ["s3://{BUCKET}/evals/"]

[[policy.rules]]
resource = "evals"
requester_groups = ["ml"]
actions = ["read"]
approver_groups = ["security"]
justification_required = false
oncall_service = "PSVCEV1"

[pagerduty]
enabled = true
token = "{TOKEN}"
api_url = "{pagerduty.url}"
cache_seconds = 300
email_principal = "local_part"
email_domains = ["example.com"]
"""
    with running_world(tmp_path_factory.mktemp("oncall-world"), extra_config=config) as w:
        yield w


def ask(world: World, who: str, unique: str, area: str = "models") -> dict:
    person = world.person(who, ("ml",))
    status, created = api(
        world, world.api_token(person), "POST", "/requests", {"resource": f"s3://{BUCKET}/{area}/{unique}/"}
    )
    assert status == 201, created
    return created


def test_whoever_is_on_call_is_approved_at_once_others_wait(
    world: World, pagerduty: FakePagerDuty, unique: str
) -> None:
    oncall, other = f"pd-on-{unique}", f"pd-off-{unique}"
    pagerduty.oncalls = [
        oncall_entry("PUSER1", f"{oncall}@example.com", "PEPML1", level=1),
        oncall_entry("PUSER2", f"{other}@example.com", "PEPML1", level=2),  # the escalation, not on call
        oncall_entry("PUSER3", f"{other}@elsewhere.org", "PEPML1", level=1),  # not our domain
    ]
    world.upstream().put_object(Bucket=BUCKET, Key=f"models/{unique}/w", Body=b"w")
    granted = ask(world, oncall, unique)
    assert granted["status"] == "approved"
    assert "on call in PagerDuty for PSVCML1" in granted["decision_comment"]
    world.sync()
    assert read(world, world.person(oncall, ("ml",)), f"models/{unique}/w") == b"w"
    assert ask(world, other, unique)["status"] == "pending"
    path, query = pagerduty.requests[-1]
    assert path == "/oncalls" and query["escalation_policy_ids[]"] == "PEPML1"
    # Cached: the second request did not ask again.
    assert [p for p, _ in pagerduty.requests].count("/services/PSVCML1") == 1


def test_an_unreachable_pagerduty_fails_closed_to_normal_approval(
    world: World, pagerduty: FakePagerDuty, unique: str
) -> None:
    oncall = f"pd-down-{unique}"
    pagerduty.oncalls = [oncall_entry("PUSER9", f"{oncall}@example.com", "PEPEV1")]
    pagerduty.down = True
    try:
        seen = len(pagerduty.requests)
        assert ask(world, oncall, unique, "evals")["status"] == "pending"
        assert len(pagerduty.requests) > seen  # it did ask
        seen = len(pagerduty.requests)
        assert ask(world, oncall, unique, "evals")["status"] == "pending"
        assert len(pagerduty.requests) > seen  # a failure is not cached...
    finally:
        pagerduty.down = False
    assert ask(world, oncall, unique, "evals")["status"] == "approved"  # ...so the next request sees it
