"""`create` grants in the pure decision: they cover writes that cannot replace an object, or that the
gateway guards with If-None-Match: *, and nothing a caller asked to replace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.access.decide import CREATE_ONLY, NO_GRANT, Allow, Deny, authorize
from proxy.access.grants import Action, Grant, Overwrite, Target

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _grant(actions: set[Action], gid: str = "g_1") -> Grant:
    return Grant(gid, "alice", "b", "releases/", frozenset(actions), NOW, NOW + timedelta(hours=1))


def _write(overwrite: Overwrite, key: str = "releases/v1.bin") -> Target:
    return Target(Action.WRITE, "b", key, overwrite=overwrite)


def test_create_grant_allows_a_guardable_write_only_with_the_guard() -> None:
    decision = authorize([_write(Overwrite.GUARDABLE)], [_grant({Action.CREATE})], NOW)
    assert isinstance(decision, Allow) and decision.create_only


def test_create_grant_allows_multipart_parts_without_a_guard() -> None:
    decision = authorize([_write(Overwrite.NEVER)], [_grant({Action.CREATE})], NOW)
    assert isinstance(decision, Allow) and not decision.create_only


def test_create_grant_refuses_a_write_that_asked_to_replace_an_object() -> None:
    decision = authorize([_write(Overwrite.MAY)], [_grant({Action.CREATE})], NOW)
    assert isinstance(decision, Deny) and decision.reason == CREATE_ONLY


def test_create_grant_does_not_open_deletes_or_other_prefixes() -> None:
    grants = [_grant({Action.CREATE})]
    assert authorize([Target(Action.DELETE, "b", "releases/v1.bin")], grants, NOW) == Deny(
        NO_GRANT, Target(Action.DELETE, "b", "releases/v1.bin")
    )
    outside = _write(Overwrite.GUARDABLE, "scratch/x")
    assert authorize([outside], grants, NOW) == Deny(NO_GRANT, outside)


def test_a_write_grant_is_used_before_a_create_grant_and_sends_no_guard() -> None:
    grants = [_grant({Action.CREATE}, "g_create"), _grant({Action.WRITE}, "g_write")]
    decision = authorize([_write(Overwrite.GUARDABLE)], grants, NOW)
    assert isinstance(decision, Allow)
    assert decision.grant_ids == ("g_write",) and not decision.create_only
