"""The Slack app's pure parts: binding users by email, the denial DM limiter, escaping, message shapes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.access.grants import Action
from proxy.access.requests import AccessRequest, Approval, RequestStatus
from proxy.config import ConfigError, load_settings
from proxy.notify import blocks
from proxy.notify.slack import (
    RepeatLimiter,
    denial_area,
    email_for_principal,
    principal_from_email,
    verified_email,
)
from proxy.observe.events import RequestEvent

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def a_request(**changes: Any) -> AccessRequest:
    base = AccessRequest(
        id="r_1",
        requester="alice",
        resource_name="models",
        bucket="archive",
        prefix="models/",
        actions=frozenset({Action.READ, Action.LIST}),
        duration=timedelta(hours=2),
        justification="eval <!channel> & friends",
        status=RequestStatus.PENDING,
        created_at=T0,
        expires_at=T0 + timedelta(hours=24),
        approvals_required=2,
    )
    return replace(base, **changes)


def test_local_part_binding_only_trusts_the_configured_domains() -> None:
    assert principal_from_email("Alice@Example.com", "local_part", ["example.com"]) == "alice"
    assert principal_from_email("alice@evil.example", "local_part", ["example.com"]) is None
    assert principal_from_email("not-an-email", "local_part", ["example.com"]) is None
    assert principal_from_email("alice@example.com", "email", []) == "alice@example.com"
    assert principal_from_email("alice@example.com", "", []) is None


def test_reverse_binding_agrees_with_the_forward_one() -> None:
    for name, mode, domains in (("alice", "local_part", ["example.com"]), ("bob@corp.io", "email", [])):
        email = email_for_principal(name, mode, domains)
        assert email is not None and principal_from_email(email, mode, domains) == name
    assert email_for_principal("alice", "email", []) is None


def test_only_confirmed_human_accounts_have_a_verified_email() -> None:
    person = {"is_email_confirmed": True, "profile": {"email": "a@example.com"}}
    assert verified_email(person) == "a@example.com"
    assert verified_email({**person, "is_email_confirmed": False}) is None
    assert verified_email({**person, "deleted": True}) is None
    assert verified_email({**person, "is_bot": True}) is None


def test_denial_dm_limiter_allows_one_per_principal_and_resource_per_interval() -> None:
    limiter = RepeatLimiter(600, {})
    assert limiter.allow("alice", "s3://a/x", 1000)
    assert not limiter.allow("alice", "s3://a/x", 1599)
    assert limiter.allow("alice", "s3://a/y", 1001)
    assert limiter.allow("bob", "s3://a/x", 1002)
    assert limiter.allow("alice", "s3://a/x", 1600)
    # An interval given with the message wins over the limiter's own.
    assert limiter.allow("alice", "held", 2000, interval=60)
    assert not limiter.allow("alice", "held", 2059, interval=60)
    assert limiter.allow("alice", "held", 2060, interval=60)


def test_user_text_cannot_mention_a_channel_or_forge_a_link() -> None:
    text = str(blocks.pending_blocks(a_request()))
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; friends" in text


def test_partial_approvals_keep_the_buttons_and_show_progress() -> None:
    request = a_request(approvals=(Approval("carol", T0),))
    shown = blocks.message_blocks(request)
    assert "actions" in [b["type"] for b in shown]
    assert "1 of 2" in str(shown) and "carol" in str(shown)


def test_a_decided_request_has_no_buttons_and_says_who_and_why() -> None:
    denied = a_request(status=RequestStatus.DENIED, decided_by="dave", decided_at=T0, decision_comment="no")
    shown = blocks.message_blocks(denied)
    assert "actions" not in [b["type"] for b in shown]
    assert "Denied" in str(shown) and "by dave" in str(shown) and ": no" in str(shown)


def test_duration_choices_stop_at_the_longest_allowed() -> None:
    assert blocks.duration_choices(timedelta(hours=4)) == ["30m", "1h", "2h", "4h"]
    assert blocks.duration_choices(timedelta(minutes=10)) == ["10m"]


def test_enabled_slack_needs_a_token_a_secret_and_a_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRANTGATE_SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("GRANTGATE_SLACK_SIGNING_SECRET", raising=False)
    config = tmp_path / "grantgate.toml"
    config.write_text('[slack]\nenabled = true\nsigning_secret = "s"\ndefault_channel = "C1"\n')
    with pytest.raises(ConfigError, match="bot_token"):
        load_settings(config)
    monkeypatch.setenv("GRANTGATE_SLACK_BOT_TOKEN", "xoxb-1")
    assert load_settings(config).slack.token() == "xoxb-1"
    config.write_text('[slack]\nemail_principal = "local_part"\n')
    with pytest.raises(ConfigError, match="email_domains"):
        load_settings(config)
    config.write_text('[slack]\nusers = { "alice" = "alice" }\n')
    with pytest.raises(ConfigError, match="Slack user id"):
        load_settings(config)


def test_denials_are_grouped_by_bucket_and_top_level_prefix() -> None:
    def event(key: str | None, prefix: str | None = None) -> RequestEvent:
        return RequestEvent("r", 0.0, "10.0.0.1", "boto3", "GET", bucket="archive", key=key, prefix=prefix)

    assert denial_area(event("models/llama/a.gguf")) == "s3://archive/models/"
    assert denial_area(event("models/b")) == denial_area(event("models/llama/a.gguf"))
    assert denial_area(event("readme.txt")) == "s3://archive/readme.txt"
    assert denial_area(event(None, "datasets/2026/")) == "s3://archive/datasets/"
