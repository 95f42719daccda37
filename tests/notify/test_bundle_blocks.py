"""The Slack card of a bundle: one card naming every resource, and what an extension extends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from proxy.access.grants import Action
from proxy.access.requests import AccessRequest, BundlePart, RequestStatus
from proxy.notify import blocks

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def request(**fields: object) -> AccessRequest:
    values: dict[str, object] = {
        "id": "r_1",
        "requester": "alice",
        "resource_name": "models",
        "bucket": "b",
        "prefix": "models/",
        "actions": frozenset({Action.READ}),
        "duration": timedelta(hours=2),
        "justification": "eval run",
        "status": RequestStatus.PENDING,
        "created_at": NOW,
        "expires_at": NOW + timedelta(days=1),
    }
    values.update(fields)
    return AccessRequest(**values)  # type: ignore[arg-type]


def test_a_bundle_is_one_card_listing_every_resource_with_one_pair_of_buttons() -> None:
    card = blocks.pending_blocks(request(bundle=(BundlePart("evals", "b", "evals/x/"),)))
    text = json.dumps(card)
    assert "s3://b/models/" in text and "s3://b/evals/x/" in text and "granted together" in text
    buttons = [e for b in card if b["type"] == "actions" for e in b["elements"]]
    assert [(e["action_id"], e["value"]) for e in buttons] == [(blocks.APPROVE, "r_1"), (blocks.DENY, "r_1")]


def test_an_extension_card_names_the_grant_it_extends() -> None:
    assert "`g_1` (starts where it ends)" in json.dumps(blocks.pending_blocks(request(extends="g_1")))
