"""Scheduled windows and ticket references: the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.access.decide import Allow, Deny, authorize
from proxy.access.durations import parse_moment
from proxy.access.grants import Action, Grant, Target
from proxy.access.policy import Rejected, Rule, ticket_problem
from proxy.access.requests import AccessRequest, RequestStatus

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
TICKETED = Rule("models", ticket_required=True, ticket_pattern="^ML-[0-9]+$")


def scheduled_grant(starts_in: timedelta, lasts: timedelta = timedelta(hours=2)) -> Grant:
    return Grant(
        "g_1",
        "alice",
        "bucket",
        "models/",
        frozenset({Action.READ}),
        created_at=NOW,
        starts_at=NOW + starts_in,
        expires_at=NOW + starts_in + lasts,
    )


def test_a_scheduled_grant_allows_nothing_before_its_window_and_everything_in_it() -> None:
    grant = scheduled_grant(timedelta(hours=1))
    target = [Target(Action.READ, "bucket", "models/a.gguf")]
    assert isinstance(authorize(target, [grant], NOW), Deny)
    assert isinstance(authorize(target, [grant], NOW + timedelta(minutes=59, seconds=59)), Deny)
    assert isinstance(authorize(target, [grant], NOW + timedelta(hours=1)), Allow)
    assert isinstance(authorize(target, [grant], NOW + timedelta(hours=3)), Deny)
    assert grant.is_scheduled(NOW) and not grant.is_scheduled(NOW + timedelta(hours=1))


def request_from(starts_at: datetime | None) -> AccessRequest:
    return AccessRequest(
        "r_1", "alice", "models", "bucket", "models/", frozenset({Action.READ}), timedelta(hours=2), "why",
        RequestStatus.PENDING, NOW, NOW + timedelta(days=1), starts_at=starts_at,
    )  # fmt: skip


def test_a_window_keeps_its_end_whenever_it_is_approved() -> None:
    start = NOW + timedelta(hours=5)
    assert request_from(start).window(NOW) == (start, start + timedelta(hours=2))
    # Approved an hour into its window: access until the window's end, not two hours from the approval.
    assert request_from(start).window(start + timedelta(hours=1)) == (None, start + timedelta(hours=2))
    assert request_from(None).window(NOW) == (None, NOW + timedelta(hours=2))


@pytest.mark.parametrize(
    ("ticket", "code"),
    [("", "ticket_missing"), ("ml-12", "invalid_ticket"), ("ML-12 ", None), ("ML-12x", "invalid_ticket")],
)
def test_a_rule_requires_a_ticket_matching_its_pattern(ticket: str, code: str | None) -> None:
    problem = ticket_problem(TICKETED, ticket)
    assert (problem.code if isinstance(problem, Rejected) else None) == code


def test_an_optional_ticket_may_be_left_out_but_must_match_when_given() -> None:
    optional = Rule("models", ticket_pattern="^ML-[0-9]+$")
    assert ticket_problem(optional, "") is None
    assert isinstance(ticket_problem(optional, "JIRA-1"), Rejected)


def test_times_need_their_zone() -> None:
    assert parse_moment("2025-06-01T22:00:00Z") == datetime(2025, 6, 1, 22, tzinfo=UTC)
    assert parse_moment("2025-06-02T00:00:00+02:00") == datetime(2025, 6, 1, 22, tzinfo=UTC)
    with pytest.raises(ValueError, match="time zone"):
        parse_moment("2025-06-01T22:00:00")
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_moment("tomorrow")
