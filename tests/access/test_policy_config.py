"""The [policy] config section: validated at load with messages naming the entry, and the presets."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from proxy.access.grants import Action
from proxy.access.policy import Ask, Instant, NeedsApproval, evaluate
from proxy.access.policy_config import PolicySettings
from proxy.access.presets import PRESETS, render_preset
from proxy.config import ConfigError, load_settings
from proxy.identity.principals import Principal

RESOURCES = """
[policy.resources.models]
paths = ["s3://archive/models/"]
[policy.resources.training-data]
paths = ["s3://archive/training-data/", "s3://rlhf/"]
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "grantgate.toml"
    path.write_text(text)
    return load_settings(path)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    return str(exc.value)


def test_a_policy_loads_into_resources_rules_and_standing_access(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
[policy]
pending_ttl = "12h"
admin_groups = ["security"]
"""
        + RESOURCES
        + """
[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
actions = ["read", "list"]
default_duration = "2h"
max_duration = "1d"
approver_groups = ["security"]
approvals_required = 2
source_cidrs = ["10.0.0.0/8"]

[[policy.standing]]
principal = "inference-server"
resource = "training-data"
actions = ["read"]
""",
    )
    policy = settings.policy.build()
    assert policy.pending_ttl == timedelta(hours=12)
    assert policy.admin_groups == {"security"}
    assert [str(p) for p in policy.resource("training-data").paths] == [  # type: ignore[union-attr]
        "s3://archive/training-data/",
        "s3://rlhf/",
    ]
    [rule] = policy.rules
    assert rule.max_duration == timedelta(days=1)
    assert rule.approvals_required == 2
    assert rule.actions == {Action.READ, Action.LIST}
    [standing] = policy.standing
    assert (standing.principal, standing.resource, standing.actions) == (
        "inference-server",
        "training-data",
        {Action.READ},
    )


def test_no_policy_section_means_nothing_is_requestable(tmp_path: Path) -> None:
    policy = load(tmp_path, "[server]\n").policy.build()
    assert policy.resources == () and policy.rules == ()
    assert policy.pending_ttl == timedelta(hours=24)


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ('[[policy.rules]]\nresource = "modles"\napprovals_required = 0\n', "unknown resource 'modles'"),
        (
            '[[policy.standing]]\nprincipal = "svc"\nresource = "nope"\n',
            "standing[0]: unknown resource 'nope'",
        ),
        (
            '[[policy.rules]]\nresource = "models"\ndefault_duration = "9h"\nmax_duration = "8h"\n'
            "approvals_required = 0\n",
            "max_duration 8h is shorter than default_duration 9h",
        ),
        ('[[policy.rules]]\nresource = "models"\napprovals_required = 2\n', "approver_groups is empty"),
        (
            '[[policy.rules]]\nresource = "models"\nrequester_groups = []\napprovals_required = 0\n',
            "nobody could request",
        ),
        (
            '[[policy.rules]]\nresource = "models"\nactions = ["steal"]\napprovals_required = 0\n',
            "unknown action",
        ),
        ('[[policy.rules]]\nresource = "models"\nmax_duration = "8 hours"\n', "invalid duration"),
        (
            '[[policy.rules]]\nresource = "models"\nsource_cidrs = ["10.0.0.1/8"]\napprovals_required = 0\n',
            "invalid network '10.0.0.1/8'",
        ),
        (
            '[[policy.rules]]\nresource = "models"\napprover_groups = ["*"]\n',
            'approver_groups cannot be "*"',
        ),
        ('[[policy.rules]]\nresource = "models"\napprovals_required = 0\nmystery = 1\n', "mystery"),
        (
            '[[policy.standing]]\nprincipal = "svc"\nresource = "models"\n'
            '[[policy.standing]]\nprincipal = "svc"\nresource = "models"\n',
            "listed twice",
        ),
    ],
)
def test_invalid_policies_are_refused_at_start_with_a_clear_message(
    tmp_path: Path, policy: str, fragment: str
) -> None:
    message = refused(tmp_path, "[policy]\n" + RESOURCES + policy)
    assert fragment in message
    assert "grantgate.toml" in message


def test_invalid_resource_paths_and_names_are_refused(tmp_path: Path) -> None:
    assert "must look like s3://bucket/prefix" in refused(
        tmp_path, '[policy.resources.models]\npaths = ["archive/models/"]\n'
    )
    assert "invalid resource name 'Models Dir'" in refused(
        tmp_path, '[policy.resources."Models Dir"]\npaths = ["s3://a/m/"]\n'
    )


def test_unknown_groups_are_fine(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "[policy]\n"
        + RESOURCES
        + '[[policy.rules]]\nresource = "models"\napprover_groups = ["a-group-nobody-is-in-yet"]\n',
    )
    assert settings.policy.build().rules[0].approver_groups == {"a-group-nobody-is-in-yet"}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_a_complete_valid_config(tmp_path: Path, preset: str) -> None:
    text = render_preset(preset, bucket="acme-ml")
    assert set(tomllib.loads(text)) >= {"server", "upstream", "store", "log", "policy"}
    settings = load(tmp_path, text)
    policy = settings.policy.build()
    assert policy.resources and policy.rules
    assert all(p.bucket == "acme-ml" for r in policy.resources for p in r.paths)
    assert text.count("\n#") > 10  # commented for the reader


def _decide(preset: str, who: Principal, prefix: str, justification: str = "x" * 50):
    policy = tomllib.loads(render_preset(preset, bucket="b"))
    built = PolicySettings.model_validate(policy["policy"]).build()
    return evaluate(built, Ask(who, "b", prefix, frozenset({Action.READ}), None, justification))


def test_small_preset_asks_a_justification_and_one_approver() -> None:
    anyone = Principal("sam", frozenset())
    result = _decide("small", anyone, "models/x")
    assert isinstance(result, NeedsApproval) and result.approvals_required == 1
    assert not isinstance(_decide("small", anyone, "models/x", justification=""), NeedsApproval)


def test_growing_preset_is_instant_for_infra_and_needs_an_approval_for_others() -> None:
    infra = Principal("ivan", frozenset({"infra"}))
    ml = Principal("mia", frozenset({"ml"}))
    assert isinstance(_decide("growing", infra, "models/x"), Instant)
    result = _decide("growing", ml, "models/x")  # a reason alone no longer opens the weights
    assert isinstance(result, NeedsApproval) and result.approvals_required == 1
    assert not isinstance(_decide("growing", ml, "models/x", justification=""), Instant | NeedsApproval)
    assert isinstance(_decide("growing", ml, "training-data/x"), NeedsApproval)


def test_large_preset_needs_team_membership_and_two_approvals() -> None:
    outsider = Principal("oli", frozenset({"sales"}))
    member = Principal("eve", frozenset({"eval"}))
    assert not isinstance(_decide("large", outsider, "models/x"), Instant | NeedsApproval)
    result = _decide("large", member, "models/x")
    assert isinstance(result, NeedsApproval) and result.approvals_required == 2
    assert result.rule.source_cidrs == ("10.0.0.0/8",)


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of small, growing, large"):
        render_preset("huge")


def test_the_example_config_loads_with_its_policy() -> None:
    settings = load_settings(Path(__file__).resolve().parents[2] / "config.example.toml")
    policy = settings.policy.build()
    assert {r.name for r in policy.resources} == {"models", "training-data"}
    assert policy.standing and policy.rules
