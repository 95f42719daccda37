"""Workload identity settings (`[sts]`) and trust rules: which verified token becomes which principal.

Pure: rules are matched against claims that were already verified; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.identity.principals import Principal

# Asymmetric algorithms only: a JWKS holds public keys, and an HMAC "key" made of one is an old attack.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# AWS STS's own bounds for DurationSeconds.
MIN_SESSION_SECONDS = 900
MAX_SESSION_SECONDS = 43200
# The same rule as the store's principal and group names.
_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# Every principal a trust rule names lives under this prefix, which people's sign-in refuses: whatever a
# token's claims say, and however a rule's template is edited, a workload never becomes a person.
WORKLOAD_PREFIX = "wl:"


def is_workload_name(name: str) -> bool:
    return name.startswith(WORKLOAD_PREFIX)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IssuerSettings(_Section):
    """One trusted token issuer (a Kubernetes cluster, an OIDC provider) and where its keys are."""

    issuer: str
    # The token's `aud` must contain one of these (a projected token's `audience`).
    audiences: list[str] = Field(min_length=1)
    # Exactly one of: a JWKS URL (e.g. https://kubernetes.default.svc/openid/v1/jwks) or a JWKS file.
    jwks_url: str = ""
    jwks_file: str = ""
    # For an in-cluster API server: its CA and a bearer token to read the JWKS with.
    jwks_ca_file: str = ""
    jwks_token_file: str = ""
    # How long fetched keys are used before they are fetched again (a new `kid` refetches sooner).
    jwks_refresh_seconds: float = Field(300, gt=0)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    # Clock skew allowed on exp/nbf/iat.
    leeway_seconds: int = Field(60, ge=0, le=600)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = sorted(set(value) - ALLOWED_ALGORITHMS)
        if refused:
            raise ValueError(f"unsupported algorithms {refused}: use {sorted(ALLOWED_ALGORITHMS)}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if bool(self.jwks_url) == bool(self.jwks_file):
            raise ValueError(f"issuer {self.issuer!r}: set exactly one of jwks_url or jwks_file")
        return self


class TrustRule(_Section):
    """Tokens from `issuer` whose subject and claims match become `principal` with `groups`.

    `subject` and claim values are globs (`*`, `?`, `[...]`) or exact strings; a list-valued claim
    matches when any element does. `principal` may name claims in braces, e.g. "{sub}"; the name it
    makes always gets the workload prefix "wl:" (a rule cannot leave the workload namespace).
    """

    issuer: str
    subject: str = "*"
    claims: dict[str, str] = Field(default_factory=dict)
    principal: str = "{sub}"
    groups: list[str] = Field(default_factory=list)
    # A claim holding a list of group names to add (e.g. an OIDC provider's "groups").
    groups_claim: str = ""

    @field_validator("groups")
    @classmethod
    def _valid_group_names(cls, value: list[str]) -> list[str]:
        for group in value:
            if not _NAME.fullmatch(group):
                raise ValueError(f"invalid group name {group!r}: 1 to 200 characters, no spaces")
        return value


class StsSettings(_Section):
    enabled: bool = False
    # Used when the caller asks for no DurationSeconds; longer requests are capped to the maximum.
    default_session_seconds: int = Field(3600, ge=MIN_SESSION_SECONDS, le=MAX_SESSION_SECONDS)
    max_session_seconds: int = Field(3600, ge=MIN_SESSION_SECONDS, le=MAX_SESSION_SECONDS)
    issuers: list[IssuerSettings] = Field(default_factory=list)
    rules: list[TrustRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.default_session_seconds > self.max_session_seconds:
            raise ValueError("default_session_seconds must not exceed max_session_seconds")
        known = [i.issuer for i in self.issuers]
        if len(set(known)) != len(known):
            raise ValueError("each issuer may be configured only once")
        for rule in self.rules:
            if rule.issuer not in known:
                raise ValueError(f"trust rule names issuer {rule.issuer!r}, which is not in [[sts.issuers]]")
        if self.enabled and not (self.issuers and self.rules):
            raise ValueError("[sts] is enabled but has no [[sts.issuers]] or no [[sts.rules]]")
        return self

    def issuer(self, name: str) -> IssuerSettings | None:
        return next((i for i in self.issuers if i.issuer == name), None)


def session_seconds(settings: StsSettings, requested: int | None) -> int:
    """The session lifetime to issue: the default when none is asked for, never above the maximum."""
    wanted = settings.default_session_seconds if requested is None else requested
    return min(wanted, settings.max_session_seconds)


def claim_value(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into nested objects.

    Claim names may contain dots themselves ("kubernetes.io"), so at each level the longest key that
    matches a prefix of the remaining path is taken: "kubernetes.io.namespace" finds
    claims["kubernetes.io"]["namespace"].
    """
    current: Any = claims
    rest = path
    while rest:
        if not isinstance(current, Mapping):
            return None
        if rest in current:
            return current[rest]
        parts = rest.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            head = ".".join(parts[:cut])
            if head in current:
                current, rest = current[head], ".".join(parts[cut:])
                break
        else:
            return None
    return current


def _glob_matches(pattern: str, value: Any) -> bool:
    if isinstance(value, str):
        return fnmatchcase(value, pattern)
    if isinstance(value, bool | int | float):
        return fnmatchcase(str(value).lower() if isinstance(value, bool) else str(value), pattern)
    if isinstance(value, list):
        return any(_glob_matches(pattern, item) for item in value if not isinstance(item, list))
    return False


def rule_matches(rule: TrustRule, issuer: str, claims: Mapping[str, Any]) -> bool:
    if rule.issuer != issuer:
        return False
    subject = claims.get("sub")
    if not isinstance(subject, str) or not fnmatchcase(subject, rule.subject):
        return False
    return all(_glob_matches(pattern, claim_value(claims, path)) for path, pattern in rule.claims.items())


def render_principal(template: str, claims: Mapping[str, Any]) -> str | None:
    """Fill "{claim}" placeholders; None when a claim is missing or not a string."""
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = claim_value(claims, match.group(1))
        if not isinstance(value, str):
            missing = True
            return ""
        return value

    name = _PLACEHOLDER.sub(fill, template)
    return None if missing else name


def _claim_groups(claims: Mapping[str, Any], path: str) -> Iterable[str]:
    if not path:
        return ()
    value = claim_value(claims, path)
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    # A group name the store could not hold (spaces, say) is dropped, not allowed to void the rule.
    return (g for g in values if isinstance(g, str) and _NAME.fullmatch(g))


def map_identity(rules: Sequence[TrustRule], issuer: str, claims: Mapping[str, Any]) -> Principal | None:
    """The workload principal ("wl:" + the name) the first matching rule names, or None if no rule
    trusts this token.

    A rule whose principal would not be a valid name is skipped.
    """
    for rule in rules:
        if not rule_matches(rule, issuer, claims):
            continue
        rendered = render_principal(rule.principal, claims)
        if rendered is None:
            continue
        name = rendered if is_workload_name(rendered) else WORKLOAD_PREFIX + rendered
        if not _NAME.fullmatch(name):
            continue
        groups = {*rule.groups, *_claim_groups(claims, rule.groups_claim)}
        return Principal(name, frozenset(groups))
    return None
