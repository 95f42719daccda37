"""Who is on call, from PagerDuty's REST API answers (pure): the `[pagerduty]` settings, and the
principals an on-call list names.

Shapes (PagerDuty REST API v2): `GET /services/{id}` answers `{"service": {"escalation_policy": {"id"}}}`;
`GET /oncalls?escalation_policy_ids[]=..&include[]=users` answers `{"oncalls": [{"user": {"id", "email",
...}, "escalation_level": 1, "start", "end", ...}], "more": false, ...}`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class PagerDutySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # Prefer GRANTGATE_PAGERDUTY_TOKEN (a read-only REST API key) to writing it here.
    token: str = ""
    api_url: str = "https://api.pagerduty.com"  # only tests and proxies change it
    # Who counts as on call: escalation levels 1..max_escalation_level of the service's policy.
    max_escalation_level: int = Field(1, ge=1, le=10)
    # A lookup is reused this long; an unreachable API is asked again at the next request.
    cache_seconds: float = Field(60, ge=0, le=3600)
    timeout_seconds: float = Field(5, gt=0, le=30)
    # PagerDuty user id -> principal; then the user's email as Slack does ("email" or "local_part").
    users: dict[str, str] = Field(default_factory=dict)
    email_principal: Literal["", "email", "local_part"] = ""
    email_domains: list[str] = Field(default_factory=list)

    def api_token(self) -> str:
        return os.environ.get("GRANTGATE_PAGERDUTY_TOKEN", "") or self.token

    @field_validator("email_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in value]

    @model_validator(mode="after")
    def _complete(self) -> PagerDutySettings:
        if self.email_principal == "local_part" and not self.email_domains:
            raise ValueError("email_principal = 'local_part' needs email_domains, or any domain could claim")
        if self.enabled and not self.api_token():
            raise ValueError("token (or GRANTGATE_PAGERDUTY_TOKEN) is required when enabled")
        return self


class UnexpectedAnswer(ValueError):
    """PagerDuty answered something that is not the documented shape."""


def escalation_policy_of(service: Mapping[str, Any]) -> str:
    try:
        policy_id = service["service"]["escalation_policy"]["id"]
    except (KeyError, TypeError):
        raise UnexpectedAnswer("the service has no escalation_policy.id") from None
    if not isinstance(policy_id, str) or not policy_id:
        raise UnexpectedAnswer("the service's escalation_policy.id is not a string")
    return policy_id


def principals_on_call(page: Mapping[str, Any], settings: PagerDutySettings) -> frozenset[str]:
    """The principals one page of `/oncalls` names, at the escalation levels that count."""
    oncalls = page.get("oncalls")
    if not isinstance(oncalls, list):
        raise UnexpectedAnswer("no oncalls list")
    found = set()
    for entry in oncalls:
        if not isinstance(entry, dict) or not isinstance(entry.get("user"), dict):
            raise UnexpectedAnswer("an on-call entry without a user")
        level = entry.get("escalation_level")
        if not isinstance(level, int) or level > settings.max_escalation_level:
            continue
        principal = principal_of(entry["user"], settings)
        if principal:
            found.add(principal)
    return frozenset(found)


def principal_of(user: Mapping[str, Any], settings: PagerDutySettings) -> str | None:
    mapped = settings.users.get(str(user.get("id", "")))
    if mapped is not None:
        return mapped
    email = str(user.get("email") or "").strip().lower()
    if not email or "@" not in email or not settings.email_principal:
        return None
    if settings.email_principal == "email":
        return email
    local, _, domain = email.rpartition("@")
    return local if domain in settings.email_domains else None
