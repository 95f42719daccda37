"""The approver context on the Slack card: built from the same JSON the API answers, escaped, pending only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from proxy.access import context
from proxy.access.grants import Action, Grant
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.audit.records import Usage
from proxy.notify import blocks

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _request(**fields: object) -> AccessRequest:
    values: dict[str, object] = {
        "id": "r_2",
        "requester": "alice",
        "resource_name": "models",
        "bucket": "b",
        "prefix": "models/llama/",
        "actions": frozenset({Action.READ, Action.LIST}),
        "duration": timedelta(hours=2),
        "justification": "eval run",
        "status": RequestStatus.PENDING,
        "created_at": NOW,
        "expires_at": NOW + timedelta(days=1),
    }
    values.update(fields)
    return AccessRequest(**values)  # type: ignore[arg-type]


def _grant(gid: str, prefix: str, *, principal: str = "alice", hours: int = 1) -> Grant:
    return Grant(
        gid,
        principal,
        "b",
        prefix,
        frozenset({Action.READ}),
        NOW - timedelta(days=3),
        NOW + timedelta(hours=hours),
    )


def _context() -> dict[str, object]:
    request = _request()
    grants = [
        _grant("g_old", "models/llama/v1/", hours=-48),  # inside the prefix, ended
        _grant("g_held", "models/", hours=1),  # covers it, still active
        _grant("g_other", "datasets/"),  # elsewhere
        _grant("g_bob", "models/", principal="bob"),  # someone else's
    ]
    past = context.past_grants(request, grants)
    usage = {"g_old": Usage("g_old", "alice", requests=3, bytes_read=5 * 1024 * 1024, last_used_at=NOW)}
    size = context.PrefixSize("b", "models/llama/", objects=20000, bytes=3 * 1024**3, complete=False)
    return context.build(request, ["ml", "<!channel>"], past, usage, [size], NOW)


def test_context_names_related_grants_only_and_what_is_still_held() -> None:
    built = _context()
    assert {g["grant_id"] for g in built["past_grants"]} == {"g_old", "g_held"}
    assert [g["grant_id"] for g in built["overlapping"]] == ["g_held"]
    lines = context.describe(built)
    assert "Under s3://b/models/llama/: more than 20000 objects, more than 3.0 GiB" in lines
    assert any("g_old read s3://b/models/llama/v1/: 5.0 MiB read, 0 B written, last used" in x for x in lines)
    assert any(x.startswith("Already holds: read on s3://b/models/ until") for x in lines)


def test_pending_card_shows_the_context_escaped_and_decided_card_does_not() -> None:
    lines = context.describe(_context())
    card = blocks.pending_blocks(_request(), lines)
    [section] = [b for b in card if b.get("block_id") == "approver_context"]
    text = section["text"]["text"]
    assert text.startswith("*To decide*") and "more than 20000 objects" in text
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text  # no @-channel from a group name
    # Before the buttons, so it is read before deciding.
    kinds = [b.get("block_id") or b["type"] for b in card]
    assert kinds.index("approver_context") < kinds.index("decide:r_2")
    decided = blocks.message_blocks(_request(status=RequestStatus.APPROVED), lines)
    assert "approver_context" not in json.dumps(decided)
    assert "approver_context" not in json.dumps(blocks.pending_blocks(_request()))
