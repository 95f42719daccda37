"""TransferWatch: a transfer in flight is re-authorized against the current view, at most every period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.access.grants import Action, Grant, Target
from proxy.access.index import GrantIndex
from proxy.errors import S3Error
from proxy.identity.keyring import KeyRing
from proxy.identity.keys import AccessKey
from proxy.identity.principals import Principal
from proxy.live_state import View
from proxy.observe.events import Outcome
from proxy.s3.watch import TransferCut, TransferWatch

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TARGETS = [Target(Action.READ, "bucket", "models/weights.bin")]


def grant(expires_at: datetime | None = None) -> Grant:
    return Grant("g_1", "ana", "bucket", "models/", frozenset({Action.READ}), NOW, expires_at)


KEY = AccessKey("GGKEXAMPLE0000000001", "ana", NOW, None)


def view(*grants: Grant, keys: tuple[AccessKey, ...] = (KEY,)) -> View:
    ring = KeyRing.build(((k, Principal(k.principal)) for k in keys), b"k" * 32)
    return View(GrantIndex.build(grants, 1), ring, 1, 0.0)


class Current:
    """What the live state would answer now; a test swaps `view` as a refresh would."""

    def __init__(self, current: View | None) -> None:
        self.view = current

    def __call__(self, _now: datetime) -> View:
        if self.view is None:
            raise S3Error.service_unavailable()
        return self.view


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def watch(current: Current, clock: Clock) -> TransferWatch:
    return TransferWatch(current, "ana", TARGETS, period=0.25, clock=clock)


def test_a_transfer_still_granted_goes_on() -> None:
    current, clock = Current(view(grant())), Clock()
    w = watch(current, clock)
    for _ in range(10):
        clock.t += 0.3
        w.check()  # raises if cut


def test_a_revoked_grant_cuts_the_transfer_at_the_next_due_check() -> None:
    current, clock = Current(view(grant())), Clock()
    w = watch(current, clock)
    current.view = view()  # the refresh after a revocation: the grant is gone
    clock.t += 0.1
    w.check()  # not due yet: one clock comparison, no decision
    clock.t += 0.2
    with pytest.raises(TransferCut) as cut:
        w.check()
    assert (cut.value.code, cut.value.status, cut.value.outcome) == ("AccessDenied", 403, Outcome.REVOKED)


def test_an_expired_grant_cuts_the_transfer() -> None:
    w = TransferWatch(Current(view(grant(expires_at=NOW + timedelta(minutes=5)))), "ana", TARGETS)
    w.recheck(NOW + timedelta(minutes=4))
    with pytest.raises(TransferCut) as cut:
        w.recheck(NOW + timedelta(minutes=5))
    assert cut.value.outcome == "revoked"


def test_a_revoked_access_key_cuts_the_transfer_though_its_grant_stands() -> None:
    current = Current(view(grant()))
    w = TransferWatch(current, "ana", TARGETS, access_key_id=KEY.access_key_id)
    w.recheck(NOW)
    current.view = view(grant(), keys=())  # the refresh after the key was revoked
    with pytest.raises(TransferCut) as cut:
        w.recheck(NOW)
    assert (cut.value.code, cut.value.status) == ("AccessDenied", 403)
    assert "access key" in cut.value.message
    assert cut.value.outcome == "revoked"


def test_a_session_transfer_is_not_looked_up_in_the_key_ring() -> None:
    # Session keys are never in the ring: their transfers are watched through their grants alone.
    w = TransferWatch(Current(view(grant(), keys=())), "ana", TARGETS, access_key_id=None)
    w.recheck(NOW)  # raises if cut


def test_state_past_its_grace_period_cuts_the_transfer_as_unavailable() -> None:
    w = TransferWatch(Current(None), "ana", TARGETS)
    with pytest.raises(TransferCut) as cut:
        w.recheck(NOW)
    assert (cut.value.code, cut.value.status) == ("ServiceUnavailable", 503)
    assert cut.value.outcome == "state_unavailable"


def test_the_view_is_consulted_at_most_once_per_period() -> None:
    calls: list[datetime] = []
    the_view = view(grant())

    def counted(now: datetime) -> View:
        calls.append(now)
        return the_view

    clock = Clock()
    w = TransferWatch(counted, "ana", TARGETS, period=0.25, clock=clock)
    for _ in range(100):  # 100 chunks within 0.99 s
        clock.t += 0.0099
        w.check()
    assert len(calls) == 3
