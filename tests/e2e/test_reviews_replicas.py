"""A missed review with two gateway replicas sweeping one PostgreSQL: the reminders go out (email) before
the grace period ends, then the grant is revoked with reason "review missed", each exactly once.

Time passes for real on a short period (`review_every = "2s"`, `review_grace = "4s"`: the last reminder goes
out half-way through the grace period), as 90 and 7 days would in production.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError
from support.access import read
from support.observed import audit_events, eventually
from support.postgres import throwaway_cluster
from support.smtp import PASSWORD, USERNAME, Mailbox, running_smtp
from support.world import BUCKET, Identity, World, running_world

from proxy.audit.store import StoredEvent


def policy(box: Mailbox) -> str:
    return f"""
[policy]
sweep_interval_seconds = 0.1

[policy.resources.lapsing]
paths = ["s3://{BUCKET}/lapsing/"]
review_every = "2s"
review_grace = "4s"
reviewers = ["security"]

[[policy.rules]]
resource = "lapsing"
requester_groups = ["ml"]
actions = ["read"]
approver_groups = ["security"]

[email]
enabled = true
host = "{box.host}"
port = {box.port}
ca_file = "{box.ca_file}"
username = "{USERNAME}"
password = "{PASSWORD}"
from_address = "grantgate@example.com"
domain = "example.com"
group_addresses = {{ security = "security-reviewers@example.com" }}
"""


@pytest.fixture(scope="module")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    with running_smtp(tmp_path_factory.mktemp("smtp")) as box:
        yield box


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox) -> Iterator[World]:
    """Two gateways (the world's http and https) on one PostgreSQL database, both sweeping."""
    with throwaway_cluster() as cluster:
        directory = tmp_path_factory.mktemp("reviews-replicas")
        with running_world(directory, policy(mailbox), store_url=cluster.create_database()) as world:
            yield world


def refused_everywhere(world: World, who: Identity, key: str) -> bool:
    """Both replicas refuse `who` reading `key`."""
    for tls in (False, True):
        try:
            world.client(who, tls=tls).get_object(Bucket=BUCKET, Key=key)
        except ClientError as err:
            if err.response["Error"]["Code"] != "AccessDenied":
                return False
        else:
            return False
    return True


def trail(world: World, kind: str, grant_id: str) -> list[StoredEvent]:
    return audit_events(world, kind=kind, grant_id=grant_id)


def test_a_missed_review_is_reminded_then_revoked_exactly_once(replicas: World, mailbox: Mailbox) -> None:
    world = replicas
    alice = world.person("alice-lapsing", ("ml",))
    bob = world.person("bob-lapsing", ("ml",))
    key = "lapsing/alice/weights.bin"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"standing weights")
    grant = world.grant(alice, f"s3://{BUCKET}/lapsing/alice/", "read", ttl=None)
    assert read(world, alice, key) == b"standing weights"

    revoked = eventually(
        lambda: trail(world, "grant_revoked", grant.id), timeout=20, what="the missed review's revocation"
    )
    # A later grant's revocation proves both gateways kept sweeping after the first one's.
    later = world.grant(bob, f"s3://{BUCKET}/lapsing/bob/", "read", ttl=None)
    eventually(lambda: trail(world, "grant_revoked", later.id), timeout=20, what="the later revocation")

    assert [e.body["event"]["reason"] for e in revoked] == ["review missed"]
    assert revoked[0].body["event"]["actor"] == "system"
    reminders = trail(world, "review_due", grant.id)
    assert [e.body["event"]["final"] for e in reminders] == [False, True]
    assert all(e.body["event"]["reviewers"] == ["security"] for e in reminders)
    decided = trail(world, "review_decided", grant.id)
    assert [e.body["event"]["decision"] for e in decided] == ["missed"]
    # Announced first: both reminders come before the revocation, in the trail and in time.
    assert reminders[-1].seq < revoked[0].seq
    assert reminders[-1].body["at"] < revoked[0].body["at"]
    assert refused_everywhere(world, alice, key)

    def mails(address: str, words: str) -> list[str]:
        subjects = [" ".join(str(m["Subject"]).split()) for m in mailbox.to(address)]  # unfolded
        return [s for s in subjects if words in s]

    subjects = eventually(
        lambda: len(mails(f"{alice.name}@example.com", "")) >= 3 and mails(f"{alice.name}@example.com", ""),
        what="the holder's mails",
    )
    assert subjects == [
        f"[GrantGate] review {alice.name}'s access to s3://{BUCKET}/lapsing/alice/",
        f"[GrantGate] Last reminder: review {alice.name}'s access to s3://{BUCKET}/lapsing/alice/",
        f"[GrantGate] Your access to s3://{BUCKET}/lapsing/alice/ was revoked",
    ]
    assert len(mails("security-reviewers@example.com", f"review {alice.name}'s access")) == 2
