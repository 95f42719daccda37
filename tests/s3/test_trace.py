"""The request event is built once from what the pipeline's steps returned (trace.event_of, pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.access.decide import ABSENT, NO_GRANT, SOURCE_NETWORK, Allow, Deny
from proxy.access.grants import Action, Grant, Scope, Target
from proxy.errors import S3Error
from proxy.identity.principals import Caller, Principal
from proxy.observe.events import Outcome, Verdict
from proxy.s3.operations import Operation
from proxy.s3.trace import Trace, event_of

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
GRANT = Grant("g_1", "ana", "b", "data/", frozenset({Action.READ, Action.LIST}), NOW, None)
CALLER = Caller(Principal("ana", frozenset({"ml", "eng"})), "GGKEXAMPLE0000000001")
GET = Operation("GetObject", "b", "data/x", (Target(Action.READ, "b", "data/x"),))
LIST = Operation("ListObjectsV2", "b", None, (Target(Action.LIST, "b", "data/", Scope.PREFIX),))


def trace(**steps: object) -> Trace:
    t = Trace("R1", 1.0, 0.0, "10.0.0.1", "boto3", "GET")
    for name, value in steps.items():
        setattr(t, name, value)
    return t


def test_an_allowed_request_names_its_caller_operation_and_grant() -> None:
    event = event_of(
        trace(
            access_key_id="GGKEXAMPLE0000000001",
            caller=CALLER,
            operation=GET,
            decision=Allow((GRANT,)),
            upstream_status=200,
            ttfb_ms=0.5,
        ),
        1.5,
    )
    assert (event.principal, event.groups, event.access_key_id) == (
        "ana",
        ("eng", "ml"),
        "GGKEXAMPLE0000000001",
    )
    assert (event.operation, event.action, event.bucket, event.key) == ("GetObject", "read", "b", "data/x")
    assert (event.decision, event.outcome, event.status, event.grant_ids) == ("allow", "ok", 200, ("g_1",))
    assert (event.duration_ms, event.ttfb_ms, event.deny_reason, event.reason) == (1.5, 0.5, None, None)
    assert isinstance(event.decision, Verdict) and isinstance(event.outcome, Outcome)


def test_a_listing_records_the_prefix_it_covers() -> None:
    assert event_of(trace(operation=LIST), 0.0).prefix == "data/"


@pytest.mark.parametrize(
    ("reason", "error", "deny_reason", "outcome"),
    [
        (NO_GRANT, S3Error.access_denied(), "no_grant", "denied"),
        (SOURCE_NETWORK, S3Error.access_denied(), "source_network", "denied"),
        (ABSENT, S3Error.no_such_key(), None, "client_error"),  # answered as S3 answers a missing key
    ],
)
def test_a_denial_records_why(reason: str, error: S3Error, deny_reason: str | None, outcome: str) -> None:
    event = event_of(trace(caller=CALLER, operation=GET, decision=Deny(reason), error=error), 0.1)
    assert (event.decision, event.deny_reason, event.outcome) == ("deny", deny_reason, outcome)
    assert (event.status, event.reason, event.grant_ids) == (error.status, error.code, ())


def test_a_forged_request_keeps_the_key_it_claimed_but_names_nobody() -> None:
    event = event_of(trace(access_key_id="GGK\udcffforged", error=S3Error.signature_mismatch()), 0.1)
    assert (event.principal, event.access_key_id, event.decision) == (None, "GGK\ufffdforged", "deny")


@pytest.mark.parametrize(
    ("steps", "decision", "outcome", "status"),
    [
        (
            {"ending": Outcome.UPSTREAM_ERROR, "error": S3Error.service_unavailable()},
            "error",
            "upstream_error",
            503,
        ),
        ({"upstream_status": 404}, "allow", "upstream_status", 404),
        ({"upstream_status": 404, "ending": Outcome.CLIENT_DISCONNECTED}, "allow", "upstream_status", 404),
        (
            {"upstream_status": 200, "ending": Outcome.CLIENT_DISCONNECTED},
            "allow",
            "client_disconnected",
            200,
        ),
        ({"upstream_status": 200, "ending": Outcome.REVOKED}, "allow", "revoked", 200),
        ({"ending": Outcome.REVOKED, "error": S3Error.access_denied()}, "deny", "revoked", 403),
        ({"ending": Outcome.INTERNAL_ERROR, "error": S3Error.internal()}, "error", "internal_error", 500),
        ({"error": S3Error.service_unavailable()}, "error", "ok", 503),  # the state is too old to trust
        ({"ending": Outcome.CLIENT_DISCONNECTED}, "deny", "client_disconnected", 0),
    ],
)
def test_how_the_request_ended(steps: dict[str, object], decision: str, outcome: str, status: int) -> None:
    event = event_of(trace(caller=CALLER, operation=GET, **steps), 0.1)
    assert (event.decision, event.outcome, event.status) == (decision, outcome, status)
