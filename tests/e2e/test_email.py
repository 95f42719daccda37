"""Email notifications end to end: a gateway with [email] pointed at a local SMTP server that demands
STARTTLS and authentication; a request mails its approvers' list, the decision mails the requester."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.access import api
from support.observed import eventually
from support.smtp import PASSWORD, USERNAME, Mailbox, running_smtp
from support.world import BUCKET, World, running_world


@pytest.fixture(scope="module")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    with running_smtp(tmp_path_factory.mktemp("smtp")) as box:
        yield box


def email_config(box: Mailbox, password: str = PASSWORD) -> str:
    return f"""
[policy]
[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
actions = ["read"]
approver_groups = ["security"]
justification_required = false

[email]
enabled = true
host = "{box.host}"
port = {box.port}
ca_file = "{box.ca_file}"
username = "{USERNAME}"
password = "{password}"
from_address = "grantgate@example.com"
domain = "example.com"
group_addresses = {{ security = "security-approvers@example.com" }}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("email-world"), extra_config=email_config(mailbox)) as w:
        yield w


def test_request_mails_the_approvers_and_the_decision_mails_the_requester(
    world: World, mailbox: Mailbox, unique: str
) -> None:
    alice = world.person(f"mail-alice-{unique}", ("ml",))
    carol = world.person(f"mail-carol-{unique}", ("security",))
    status, created = api(
        world, world.api_token(alice), "POST", "/requests", {"resource": f"s3://{BUCKET}/models/{unique}/"}
    )
    assert status == 201
    [mail] = eventually(
        lambda: [m for m in mailbox.to("security-approvers@example.com") if created["id"] in m.get_payload()],
        what="the approvers' mail",
    )
    assert mail["From"] == "grantgate@example.com" and alice.name in mail["Subject"]
    assert f"{world.http.control_url}/inbox" in mail.get_payload()

    api(world, world.api_token(carol), "POST", f"/requests/{created['id']}/approve", {"comment": "ok"})
    [decided] = eventually(lambda: mailbox.to(f"{alice.name}@example.com"), what="the requester's mail")
    assert "approved" in decided["Subject"] and f"by {carol.name}: ok" in decided.get_payload()
