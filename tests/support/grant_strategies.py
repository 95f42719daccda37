"""Hypothesis strategies for grants and targets, shaped to collide where prefix matching can go wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from proxy.access.grants import Action, Grant, Scope, Target

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRINCIPALS = ("alice", "bob")
BUCKETS = ("models", "models-old", "data")
# Prefix-shaped strings that collide in the ways that matter: siblings, parents, Unicode forms.
FRAGMENTS = st.sampled_from(["", "a", "a/", "a/b/", "ab", "b/", "a%2F", "é/", "e\u0301/", "A/", "a/."])
KEYS = st.builds(lambda a, b: a + b, FRAGMENTS, st.text(max_size=4))
MINUTES = st.integers(-180, 180).map(lambda m: NOW + timedelta(minutes=m))

grants_strategy = st.lists(
    st.builds(
        Grant,
        id=st.uuids().map(str),
        principal=st.sampled_from(PRINCIPALS),
        bucket=st.sampled_from(BUCKETS),
        prefix=KEYS,
        actions=st.frozensets(st.sampled_from(list(Action)), min_size=1),
        created_at=st.just(NOW - timedelta(days=1)),
        expires_at=st.none() | MINUTES,
        revoked_at=st.none() | MINUTES,
    ),
    max_size=8,
)
targets_strategy = st.lists(
    st.builds(
        Target,
        action=st.sampled_from(list(Action)),
        bucket=st.sampled_from(BUCKETS),
        key=KEYS,
        scope=st.sampled_from(list(Scope)),
    ),
    max_size=4,
)
