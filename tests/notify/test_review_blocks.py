"""The reviewers' Slack reminder shows the holder's use over the period under review."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.access.reviews import AccessReview
from proxy.audit.records import Usage
from proxy.notify import blocks

NOW = datetime(2026, 6, 6, 9, 0, tzinfo=UTC)
REVIEW = AccessReview(
    id="v_1",
    grant_id="g_1",
    principal="alice",
    resource_name="weights",
    bucket="ml-models",
    prefix="llama/",
    period_start=NOW - timedelta(days=90),
    due_at=NOW,
    deadline=NOW + timedelta(days=7),
    remind_at=NOW + timedelta(days=6),
    created_at=NOW,
)


def test_the_reviewers_card_shows_the_periods_use() -> None:
    use = Usage("g_1", "alice", requests=3, objects_read=2, bytes_read=3 * 1024 * 1024, last_used_at=NOW)
    text = blocks.review_text(REVIEW, holder=False, final=False, use=use)
    assert "This period: 3.0 MiB read in 2 objects, 3 requests, last used 2026-06-06T09:00" in text


def test_an_unused_period_is_said_so_and_the_holder_is_not_shown_figures() -> None:
    unused = Usage("g_1", "alice")
    assert "Unused this period." in blocks.review_text(REVIEW, holder=False, final=False, use=unused)
    assert "period:" not in blocks.review_text(REVIEW, holder=True, final=False, use=unused)
