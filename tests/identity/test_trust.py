"""Trust rules: which verified token claims become which principal and groups."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from proxy.identity.principals import Principal
from proxy.identity.trust import (
    IssuerSettings,
    StsSettings,
    TrustRule,
    claim_value,
    map_identity,
    session_seconds,
)

K8S = "https://kubernetes.default.svc.cluster.local"
OIDC = "https://login.example.com"


def k8s_claims(namespace: str, account: str, **extra: Any) -> dict[str, Any]:
    return {
        "iss": K8S,
        "sub": f"system:serviceaccount:{namespace}:{account}",
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account}},
        **extra,
    }


def issuer(name: str = K8S, **extra: Any) -> IssuerSettings:
    return IssuerSettings(issuer=name, audiences=["grantgate"], jwks_file="jwks.json", **extra)


def test_dotted_claim_paths_reach_into_claim_names_that_contain_dots() -> None:
    claims = k8s_claims("ml", "trainer")
    assert claim_value(claims, "kubernetes.io.namespace") == "ml"
    assert claim_value(claims, "kubernetes.io.serviceaccount.name") == "trainer"
    assert claim_value(claims, "kubernetes.io") == claims["kubernetes.io"]
    assert claim_value(claims, "kubernetes.io.missing") is None
    assert claim_value(claims, "sub.x") is None


def test_service_account_subject_becomes_a_workload_principal_by_default() -> None:
    rules = [TrustRule(issuer=K8S, subject="system:serviceaccount:ml:*", groups=["ml-jobs"])]
    assert map_identity(rules, K8S, k8s_claims("ml", "trainer")) == Principal(
        "wl:system:serviceaccount:ml:trainer", frozenset({"ml-jobs"})
    )


@pytest.mark.parametrize("template", ["{sub}", "{email}", "{preferred_username}", "alice", "{sub}x"])
def test_no_rule_maps_a_token_onto_a_persons_name(template: str) -> None:
    # A workload (or a provider account) whose claims say "alice" must not become the person alice,
    # whatever the rule's template, including the one-edit-away "{sub}" with subject "*".
    claims = {"sub": "alice", "email": "alice", "preferred_username": "alice"}
    found = map_identity([TrustRule(issuer=OIDC, subject="*", principal=template)], OIDC, claims)
    assert found is not None and found.name.startswith("wl:") and found.name != "alice"


def test_glob_on_one_namespace_does_not_admit_another() -> None:
    rules = [TrustRule(issuer=K8S, subject="system:serviceaccount:ml:*")]
    assert map_identity(rules, K8S, k8s_claims("ml-staging", "trainer")) is None
    assert map_identity(rules, K8S, k8s_claims("kube-system", "default")) is None


def test_rule_for_one_issuer_does_not_trust_the_same_subject_from_another() -> None:
    rules = [TrustRule(issuer=K8S, subject="*")]
    assert map_identity(rules, OIDC, k8s_claims("ml", "trainer")) is None


def test_claims_must_all_match_and_list_claims_match_any_element() -> None:
    rule = TrustRule(issuer=OIDC, subject="*", claims={"email_verified": "true", "groups": "ml-*"})
    assert map_identity([rule], OIDC, {"sub": "u1", "email_verified": True, "groups": ["hr", "ml-team"]})
    assert map_identity([rule], OIDC, {"sub": "u1", "email_verified": False, "groups": ["ml-team"]}) is None
    assert map_identity([rule], OIDC, {"sub": "u1", "email_verified": True, "groups": ["hr"]}) is None
    assert map_identity([rule], OIDC, {"sub": "u1", "email_verified": True}) is None


def test_principal_template_and_groups_claim() -> None:
    rule = TrustRule(
        issuer=OIDC, subject="*", principal="oidc:{email}", groups=["staff"], groups_claim="groups"
    )
    found = map_identity(
        [rule], OIDC, {"sub": "u1", "email": "ann@example.com", "groups": ["ml", "bad name"]}
    )
    assert found == Principal("wl:oidc:ann@example.com", frozenset({"staff", "ml"}))


def test_rule_whose_template_cannot_be_filled_is_skipped_for_the_next() -> None:
    rules = [
        TrustRule(issuer=OIDC, subject="*", principal="oidc:{email}"),
        TrustRule(issuer=OIDC, subject="*", principal="sub:{sub}"),
    ]
    assert map_identity(rules, OIDC, {"sub": "u1"}) == Principal("wl:sub:u1")
    assert map_identity(rules[:1], OIDC, {"sub": "u1", "email": "has space@x"}) is None


def test_first_matching_rule_wins() -> None:
    rules = [
        TrustRule(issuer=K8S, subject="system:serviceaccount:ml:admin", groups=["admins"]),
        TrustRule(issuer=K8S, subject="system:serviceaccount:ml:*", groups=["ml"]),
    ]
    assert map_identity(rules, K8S, k8s_claims("ml", "admin")).groups == frozenset({"admins"})  # type: ignore[union-attr]
    assert map_identity(rules, K8S, k8s_claims("ml", "x")).groups == frozenset({"ml"})  # type: ignore[union-attr]


def test_issuer_needs_exactly_one_key_source_and_asymmetric_algorithms() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        IssuerSettings(issuer=K8S, audiences=["a"])
    with pytest.raises(ValidationError, match="exactly one"):
        IssuerSettings(issuer=K8S, audiences=["a"], jwks_url="https://x", jwks_file="f")
    with pytest.raises(ValidationError, match="unsupported algorithms"):
        issuer(algorithms=["HS256"])
    with pytest.raises(ValidationError):
        IssuerSettings(issuer=K8S, audiences=[], jwks_file="f")


def test_sts_settings_refuse_rules_for_unknown_issuers_and_inconsistent_durations() -> None:
    with pytest.raises(ValidationError, match="not in"):
        StsSettings(issuers=[issuer()], rules=[TrustRule(issuer=OIDC)])
    with pytest.raises(ValidationError, match="must not exceed"):
        StsSettings(default_session_seconds=7200, max_session_seconds=3600)
    with pytest.raises(ValidationError, match="no"):
        StsSettings(enabled=True)
    with pytest.raises(ValidationError, match="invalid group"):
        TrustRule(issuer=K8S, groups=["a b"])


def test_session_duration_defaults_and_is_capped() -> None:
    settings = StsSettings(default_session_seconds=1800, max_session_seconds=3600)
    assert session_seconds(settings, None) == 1800
    assert session_seconds(settings, 900) == 900
    assert session_seconds(settings, 43200) == 3600
