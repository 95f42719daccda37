"""Who had access when: the spans agree with `Grant.is_active` at every moment, and only over the area."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from support.grant_strategies import BUCKETS, KEYS, MINUTES, NOW, PRINCIPALS

from proxy.access.coverage import MIN_WIDTH, Span, bar, coverage
from proxy.access.grants import Action, Grant

READ = frozenset({Action.READ})

timed_grants = st.lists(
    st.builds(
        Grant,
        id=st.uuids().map(str),
        principal=st.sampled_from(PRINCIPALS),
        bucket=st.sampled_from(BUCKETS),
        prefix=KEYS,
        actions=st.just(READ),
        created_at=MINUTES,
        expires_at=st.none() | MINUTES,
        revoked_at=st.none() | MINUTES,
        starts_at=st.none() | MINUTES,
    ),
    max_size=8,
)


def grant(
    prefix: str, start: int, end: int | None, *, revoked: int | None = None, who: str = "alice"
) -> Grant:
    return Grant(
        id=f"g_{who}_{prefix}_{start}",
        principal=who,
        bucket="models",
        prefix=prefix,
        actions=READ,
        created_at=NOW + timedelta(hours=start),
        expires_at=None if end is None else NOW + timedelta(hours=end),
        revoked_at=None if revoked is None else NOW + timedelta(hours=revoked),
    )


def hours(spans: list[Span]) -> list[tuple[str, float, float, bool]]:
    return [
        (s.grant.prefix, (s.start - NOW) / timedelta(hours=1), (s.end - NOW) / timedelta(hours=1), s.whole)
        for s in spans
    ]


def test_spans_are_clipped_to_the_range_and_end_at_revocation() -> None:
    grants = [
        grant("llama/", -5, -1),  # over before the range
        grant("llama/", 1, 3, revoked=2),  # revoked an hour early
        grant("", 4, None, who="bob"),  # the whole bucket, standing: open to the end of the range
        grant("llama/weights/", 6, 12),  # part of the area, runs past the range
        grant("llamas/", 1, 3),  # a sibling prefix: not the area
    ]
    spans = coverage(grants, "models", "llama/", NOW, NOW + timedelta(hours=8))
    assert hours(spans) == [("llama/", 1, 2, True), ("", 4, 8, True), ("llama/weights/", 6, 8, False)]


def test_a_scheduled_grant_counts_from_its_start_not_its_approval() -> None:
    scheduled = Grant(
        "g_s",
        "alice",
        "models",
        "llama/",
        READ,
        NOW,
        NOW + timedelta(hours=6),
        starts_at=NOW + timedelta(hours=4),
    )
    assert hours(coverage([scheduled], "models", "llama/", NOW, NOW + timedelta(hours=8))) == [
        ("llama/", 4, 6, True)
    ]


def test_a_bar_is_placed_as_a_share_of_the_range() -> None:
    span = Span(grant("", 2, 4), NOW + timedelta(hours=2), NOW + timedelta(hours=4), True)
    placed = bar(span, NOW, NOW + timedelta(hours=8))
    assert (placed.offset, placed.width) == (0.25, 0.25)
    # A moment at the very end is drawn as a sliver that still ends inside the timeline.
    moment = Span(
        grant("", 8, 9), NOW + timedelta(hours=8) - timedelta(seconds=1), NOW + timedelta(hours=8), True
    )
    sliver = bar(moment, NOW, NOW + timedelta(hours=8))
    assert sliver.width == MIN_WIDTH and sliver.offset + sliver.width == 1


@given(timed_grants, st.sampled_from(BUCKETS), KEYS, MINUTES, st.integers(1, 360))
def test_a_span_holds_exactly_the_moments_the_grant_is_active_over_the_area(
    grants: list[Grant], bucket: str, prefix: str, since: datetime, minutes: int
) -> None:
    until = since + timedelta(minutes=minutes)
    spans = coverage(grants, bucket, prefix, since, until)
    assert all(since <= s.start < s.end <= until for s in spans)
    assert len({s.grant.id for s in spans}) == len(spans)
    for g in grants:
        related = g.bucket == bucket and (prefix.startswith(g.prefix) or g.prefix.startswith(prefix))
        mine = [s for s in spans if s.grant is g]
        for step in range(0, minutes, 7):
            moment = since + timedelta(minutes=step)
            inside = any(s.start <= moment < s.end for s in mine)
            exists = moment >= g.created_at
            assert inside == (related and exists and g.is_active(moment)), (g, moment)
