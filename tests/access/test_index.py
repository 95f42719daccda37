"""The grant index's cost: a decision looks only at the grants whose prefix the key starts with."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from proxy import build
from proxy.access.decide import Allow, Deny
from proxy.access.grants import Action, Grant, Scope, Target
from proxy.access.index import GrantIndex

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHARDS = 5000


def grant(prefix: str, *, principal: str = "trainer", hours: int | None = 8, revoked: bool = False) -> Grant:
    return Grant(
        id=f"{principal}:{prefix}:{hours}",
        principal=principal,
        bucket="data",
        prefix=prefix,
        actions=frozenset({Action.READ, Action.LIST}),
        created_at=NOW - timedelta(days=1),
        expires_at=None if hours is None else NOW + timedelta(hours=hours),
        revoked_at=NOW - timedelta(minutes=1) if revoked else None,
    )


@pytest.fixture
def looked_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Grant]]:
    """Every grant whose activity the decision checks."""
    if "proxy.access.grants" in build.compiled_modules():
        # Compiled code calls the method directly: the patched attribute is never looked up there.
        # The index's algorithm is the same source in both builds, so the pure build's run covers it.
        pytest.skip("counts calls by patching Grant.is_active, which compiled code does not see")
    seen: list[Grant] = []
    is_active = Grant.is_active

    def counting(self: Grant, now: datetime) -> bool:
        seen.append(self)
        return is_active(self, now)

    monkeypatch.setattr(Grant, "is_active", counting)
    yield seen


# One grant per dataset shard, as a sweep over shards would hold, plus a few other principals' grants.
SHARDED = GrantIndex.build(
    [grant(f"shards/{i:05d}/") for i in range(SHARDS)]
    + [grant("", principal=f"user{i}") for i in range(100)]
    + [grant("shards/", hours=1, revoked=True)]
)


def test_an_object_decision_checks_only_the_grants_whose_prefix_matches(looked_at: list[Grant]) -> None:
    decision = SHARDED.decide("trainer", [Target(Action.READ, "data", "shards/04242/part-0.parquet")], NOW)
    assert isinstance(decision, Allow)
    assert decision.grants[0].prefix == "shards/04242/"
    assert len(looked_at) <= 2, f"{len(looked_at)} grants looked at for one object"


def test_a_denied_object_checks_only_the_grants_whose_prefix_matches(looked_at: list[Grant]) -> None:
    decision = SHARDED.decide("trainer", [Target(Action.READ, "data", "shards/99999/part-0.parquet")], NOW)
    assert isinstance(decision, Deny)
    assert len(looked_at) == 1  # the revoked grant on shards/, and nothing else


def test_bucket_metadata_takes_the_first_active_grant(looked_at: list[Grant]) -> None:
    decision = SHARDED.decide("trainer", [Target(Action.LIST, "data", scope=Scope.BUCKET)], NOW)
    assert isinstance(decision, Allow)
    assert len(looked_at) <= 2


def test_probing_a_directory_stops_at_the_first_active_grant_below_it(looked_at: list[Grant]) -> None:
    assert SHARDED.has_grant_below("trainer", "data", "shards/0", NOW)
    assert not SHARDED.has_grant_below("trainer", "data", "other/", NOW)
    assert len(looked_at) <= 2


def test_the_longest_lasting_covering_grant_is_named() -> None:
    index = GrantIndex.build(
        [grant("shards/", hours=1), grant("shards/0", hours=None), grant("shards/00", hours=9)]
    )
    decision = index.decide("trainer", [Target(Action.READ, "data", "shards/001")], NOW)
    assert isinstance(decision, Allow)
    assert decision.grants[0].expires_at is None
    assert len(index) == 3
