"""Policy pieces several test modules build their policies from."""

from __future__ import annotations

from datetime import timedelta

from proxy.access.grants import Action
from proxy.access.policy import Rule

# Model weights: ml asks and security approves (one approval), infra gets access at once.
MODELS_RULE = Rule(
    resource="models",
    requester_groups=frozenset({"ml", "infra"}),
    actions=frozenset({Action.READ, Action.LIST}),
    default_duration=timedelta(hours=2),
    max_duration=timedelta(hours=8),
    instant_groups=frozenset({"infra"}),
    approver_groups=frozenset({"security"}),
    approvals_required=1,
)
