"""Which grants may be extended, and the span the policy's maximum is held to (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.access.extensions import Extension, plan, reworded
from proxy.access.grants import Action, Grant
from proxy.access.policy import Rejected

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def grant(**fields: object) -> Grant:
    values: dict[str, object] = {"created_at": NOW - H, "expires_at": NOW + H}
    values.update(fields)
    return Grant("g1", "ada", "b", "models/", frozenset({Action.READ}), **values)  # type: ignore[arg-type]


def test_extension_starts_where_the_grant_ends_and_spans_from_the_first_start() -> None:
    g = grant()
    planned = plan(g, 2 * H, NOW - 5 * H, "ada", NOW)
    assert planned == Extension(g, 2 * H, NOW + H, 8 * H)


@pytest.mark.parametrize(
    ("g", "holder", "by", "code"),
    [
        (grant(), "bob", H, "not_yours"),
        (grant(revoked_at=NOW - H / 2), "ada", H, "grant_ended"),
        (grant(expires_at=NOW), "ada", H, "grant_ended"),
        (grant(expires_at=None), "ada", H, "standing_grant"),
        (grant(), "ada", timedelta(0), "invalid_duration"),
    ],
)
def test_what_cannot_be_extended(g: Grant, holder: str, by: timedelta, code: str) -> None:
    refused = plan(g, by, NOW - H, holder, NOW)
    assert isinstance(refused, Rejected) and refused.code == code


def test_a_span_over_the_maximum_is_explained_as_a_span() -> None:
    planned = plan(grant(), 7 * H, NOW - H, "ada", NOW)
    assert isinstance(planned, Extension)
    said = reworded(Rejected("duration_too_long", "7h is longer than the maximum of 8h"), planned, 8 * H)
    assert said.message.startswith("grant g1 and 7h more would last 9h in all, longer than the maximum of 8h")
    other = Rejected("justification_missing", "say why")
    assert reworded(other, planned, 8 * H) is other
