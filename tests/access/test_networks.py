"""Grants are usable only from the source networks their policy resource allows."""

from __future__ import annotations

from datetime import UTC, datetime

from proxy.access.grants import Action, Grant
from proxy.access.networks import NetworkRules
from proxy.access.policy import Policy, Resource, ResourcePath, Rule

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def _policy() -> Policy:
    return Policy(
        resources=(
            Resource("models", (ResourcePath("bucket", "models/"),)),
            Resource("open", (ResourcePath("bucket", "open/"),)),
        ),
        rules=(
            Rule("models", source_cidrs=("10.0.0.0/8", "2001:db8::/32")),
            Rule("open"),
        ),
    )


def _grant(prefix: str) -> Grant:
    return Grant("g1", "alice", "bucket", prefix, frozenset({Action.READ}), NOW)


def test_grant_on_restricted_resource_is_usable_only_from_its_networks() -> None:
    rules = NetworkRules(_policy())
    grant = _grant("models/llama/")
    assert rules.allows(grant, "10.1.2.3")
    assert rules.allows(grant, "2001:db8::7")
    assert not rules.allows(grant, "192.0.2.10")
    assert not rules.allows(grant, "127.0.0.1")


def test_unparseable_source_is_refused_where_networks_are_set() -> None:
    assert not NetworkRules(_policy()).allows(_grant("models/"), "not-an-address")


def test_resources_without_networks_and_unknown_prefixes_are_unrestricted() -> None:
    rules = NetworkRules(_policy())
    assert rules.allows(_grant("open/"), "192.0.2.10")
    assert rules.allows(_grant("elsewhere/"), "192.0.2.10")
