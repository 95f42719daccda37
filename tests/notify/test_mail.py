"""The email notifier against a local SMTP server demanding STARTTLS and authentication: what it sends,
and that a refused login or plain-text sending is counted, never raised into the workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.smtp import PASSWORD, USERNAME, running_smtp

from proxy.access.events import RequestCreated
from proxy.access.grants import Action
from proxy.access.policy import Policy, Resource, ResourcePath, Rule
from proxy.access.requests import AccessRequest, BundlePart, RequestStatus
from proxy.notify.counters import Outcomes
from proxy.notify.mail import EmailNotifier
from proxy.notify.mail_settings import EmailSettings

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
POLICY = Policy(
    resources=(
        Resource("models", (ResourcePath("b", "models/"),)),
        Resource("evals", (ResourcePath("b", "evals/"),)),
    ),
    rules=(
        Rule("models", approver_groups=frozenset({"security"})),
        Rule("evals", approver_groups=frozenset({"eval-owners"})),
    ),
)
REQUEST = AccessRequest(
    "r_1",
    "alice",
    "models",
    "b",
    "models/",
    frozenset({Action.READ}),
    timedelta(hours=2),
    "eval run",
    RequestStatus.PENDING,
    NOW,
    NOW + timedelta(days=1),
    bundle=(BundlePart("evals", "b", "evals/"),),
)


def settings(box: object, **changes: object) -> EmailSettings:
    values = {
        "enabled": True,
        "host": box.host,  # type: ignore[attr-defined]
        "port": box.port,  # type: ignore[attr-defined]
        "ca_file": str(box.ca_file),  # type: ignore[attr-defined]
        "username": USERNAME,
        "password": PASSWORD,
        "from_address": "grantgate@example.com",
        "group_addresses": {"security": "sec@example.com", "eval-owners": "evals@example.com"},
    }
    values.update(changes)
    return EmailSettings(**values)  # type: ignore[arg-type]


async def send(config: EmailSettings) -> Outcomes:
    outcomes = Outcomes("test_emails", "test")
    notifier = EmailNotifier(config, POLICY, "https://gg.example.com", outcomes)
    notifier(RequestCreated(NOW, "alice", "eval run", REQUEST))
    await notifier.close()
    return outcomes


async def test_a_bundle_mails_every_approver_list_once_over_starttls(tmp_path: Path) -> None:
    with running_smtp(tmp_path) as box:
        outcomes = await send(settings(box))
        assert outcomes.total("sent") == 1
        [(rcpt, mail)] = box.messages
        assert sorted(rcpt) == ["evals@example.com", "sec@example.com"]
        assert "s3://b/models/" in mail.get_payload() and "s3://b/evals/" in mail.get_payload()


@pytest.mark.parametrize("change", [{"password": "wrong"}, {"starttls": False, "username": ""}])
async def test_a_refused_send_is_counted_not_raised(tmp_path: Path, change: dict[str, object]) -> None:
    with running_smtp(tmp_path) as box:
        outcomes = await send(settings(box, **change))
        assert (outcomes.total("error"), box.messages) == (1, [])


def test_a_password_is_never_sent_without_starttls() -> None:
    with pytest.raises(ValueError, match="starttls"):
        EmailSettings(enabled=True, host="h", from_address="a@b", username="u", starttls=False)
