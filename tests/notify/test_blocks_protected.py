"""The Slack card of a request to overwrite or delete under a protected resource says so."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from proxy.access.grants import Action
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.notify import blocks

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _request(*, protected: bool) -> AccessRequest:
    return AccessRequest(
        "r_1",
        "alice",
        "releases",
        "b",
        "releases/",
        frozenset({Action.DELETE}),
        timedelta(hours=1),
        "retire the broken v3 release",
        RequestStatus.PENDING,
        NOW,
        NOW + timedelta(hours=24),
        approvals_required=2,
        protected=protected,
    )


def test_card_of_a_protected_request_says_two_approvals_are_needed() -> None:
    card = json.dumps(blocks.pending_blocks(_request(protected=True)))
    assert "*Protected:*" in card and "needs 2 distinct approvals" in card


def test_card_of_an_ordinary_request_says_nothing_of_protection() -> None:
    assert "Protected" not in json.dumps(blocks.pending_blocks(_request(protected=False)))
