"""The `[policy]` part of the config file: TOML -> validated settings -> a `Policy` value.

Validation happens once at start, so a typo in a resource name or an impossible duration stops the
gateway with a message naming the offending entry instead of surprising someone later.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.access.budgets import Budget
from proxy.access.decoys import DecoySet
from proxy.access.durations import parse_duration
from proxy.access.grants import Action, parse_actions, parse_resource
from proxy.access.policy import ANYONE, Policy, Resource, ResourcePath, ReviewSchedule, Rule, StandingAccess

_RESOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: str) -> str:
    parse_duration(value)  # raises ValueError with a readable message
    return value


def _actions(values: list[str]) -> list[str]:
    return sorted(a.value for a in parse_actions(values))


def _groups(values: list[str]) -> list[str]:
    cleaned = [v.strip() for v in values]
    if any(not v or any(c.isspace() for c in v) for v in cleaned):
        raise ValueError("group names must be non-empty and contain no spaces")
    return cleaned


class ResourceSettings(_Section):
    paths: list[str] = Field(min_length=1)
    description: str = ""
    # Overwriting or deleting anything under it needs a grant approved by two distinct people.
    protected: bool = False
    # Decoy objects inside this resource (s3://bucket/key, or a prefix ending in "/"): any read of one
    # raises a `decoy_touched` alert ([anomalies.decoy_touched]). Never shown to requesters.
    decoys: list[str] = Field(default_factory=list)
    # Dataset terms (a licence, consent limits): shown wherever access is asked for; a request must
    # carry the SHA-256 of this exact text to be accepted.
    terms: str = Field("", max_length=20000)
    # Periodic review of long-held access (standing grants, chains of extensions): every `review_every`
    # of continuous access the reviewers confirm or revoke it; undecided after `review_grace`, it is
    # revoked. `reviewers` (groups) default to the approvers of the resource's rules.
    review_every: str = ""
    review_grace: str = "7d"
    # Access that resumes within this long of ending counts as held on: daily re-requests add up.
    review_gap: str = "1d"
    reviewers: list[str] = Field(default_factory=list)

    @field_validator("review_every")
    @classmethod
    def _valid_every(cls, value: str) -> str:
        return _duration(value) if value else value

    @field_validator("review_grace", "review_gap")
    @classmethod
    def _valid_grace(cls, value: str) -> str:
        return _duration(value)

    @field_validator("reviewers")
    @classmethod
    def _valid_reviewers(cls, values: list[str]) -> list[str]:
        return _groups(values)

    def review(self) -> ReviewSchedule | None:
        if not self.review_every:
            return None
        return ReviewSchedule(
            parse_duration(self.review_every),
            parse_duration(self.review_grace),
            frozenset(self.reviewers),
            parse_duration(self.review_gap),
        )

    @field_validator("paths")
    @classmethod
    def _valid_paths(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_resource(value)
        return values

    @model_validator(mode="after")
    def _decoys_inside(self) -> ResourceSettings:
        paths = [parse_resource(p) for p in self.paths]
        for value in self.decoys:
            bucket, key = parse_resource(value)
            if not key or key.endswith("*"):
                raise ValueError(f"decoy {value!r}: name an object key or a prefix ending in '/'")
            if not any(bucket == b and key.startswith(prefix) for b, prefix in paths):
                raise ValueError(f"decoy {value!r} is outside the resource's paths")
        return self

    def decoy_entries(self) -> list[tuple[str, str]]:
        return [parse_resource(value) for value in self.decoys]


class RuleSettings(_Section):
    resource: str
    # Who may ask: group names, or "*" for every authenticated principal.
    requester_groups: list[str] = Field(default_factory=lambda: [ANYONE])
    actions: list[str] = Field(default_factory=lambda: ["read", "list"])
    default_duration: str = "1h"
    max_duration: str = "8h"
    justification_required: bool = True
    justification_min_length: int = Field(10, ge=0, le=1000)
    instant_groups: list[str] = Field(default_factory=list)
    approver_groups: list[str] = Field(default_factory=list)
    approvals_required: int = Field(1, ge=0, le=20)
    source_cidrs: list[str] = Field(default_factory=list)
    break_glass: bool = False
    ticket_required: bool = False
    ticket_pattern: str = ""  # e.g. "^ML-[0-9]+$": the whole reference must match
    # A PagerDuty service id (e.g. "PSVC123"): its on-call is approved at once ([pagerduty] section).
    oncall_service: str = Field("", pattern=r"^[A-Z0-9]{0,32}$")
    # The budget a grant gets when the request names none, and the loosest one a request may ask for:
    # {max_bytes = "20GiB", max_objects = 10, single_use = true}, each optional.
    budget: dict[str, Any] | None = None
    max_budget: dict[str, Any] | None = None

    @field_validator("budget", "max_budget")
    @classmethod
    def _valid_budget(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        Budget.from_dict(value)
        return value

    @field_validator("ticket_pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"ticket_pattern is not a valid regular expression: {exc}") from None
        return value

    @field_validator("default_duration", "max_duration")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        return _duration(value)

    @field_validator("actions")
    @classmethod
    def _valid_actions(cls, values: list[str]) -> list[str]:
        return _actions(values)

    @field_validator("requester_groups", "instant_groups", "approver_groups")
    @classmethod
    def _valid_groups(cls, values: list[str]) -> list[str]:
        return _groups(values)

    @field_validator("source_cidrs")
    @classmethod
    def _valid_cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ValueError(f"invalid network {value!r}: {exc}") from None
        return values

    @model_validator(mode="after")
    def _consistent(self) -> RuleSettings:
        default, maximum = parse_duration(self.default_duration), parse_duration(self.max_duration)
        if maximum < default:
            raise ValueError(
                f"max_duration {self.max_duration} is shorter than default_duration {self.default_duration}"
            )
        if not self.requester_groups:
            raise ValueError('requester_groups is empty: nobody could request; use ["*"] for everyone')
        if self.approvals_required > 0 and not self.approver_groups:
            raise ValueError(
                f"approvals_required is {self.approvals_required} but approver_groups is empty: "
                "name who approves, or set approvals_required = 0"
            )
        if ANYONE in self.approver_groups:
            raise ValueError('approver_groups cannot be "*": name the groups that approve')
        return self

    def build(self) -> Rule:
        return Rule(
            resource=self.resource,
            requester_groups=frozenset(self.requester_groups),
            actions=parse_actions(self.actions),
            default_duration=parse_duration(self.default_duration),
            max_duration=parse_duration(self.max_duration),
            justification_required=self.justification_required,
            justification_min_length=self.justification_min_length,
            instant_groups=frozenset(self.instant_groups),
            approver_groups=frozenset(self.approver_groups),
            approvals_required=self.approvals_required,
            source_cidrs=tuple(self.source_cidrs),
            break_glass=self.break_glass,
            ticket_required=self.ticket_required,
            ticket_pattern=self.ticket_pattern,
            oncall_service=self.oncall_service,
            budget=Budget.from_dict(self.budget),
            max_budget=Budget.from_dict(self.max_budget),
        )


class StandingSettings(_Section):
    principal: str = Field(min_length=1, max_length=200)
    resource: str
    actions: list[str] = Field(default_factory=lambda: ["read", "list"])

    @field_validator("actions")
    @classmethod
    def _valid_actions(cls, values: list[str]) -> list[str]:
        return _actions(values)


class PolicySettings(_Section):
    # How long a request may wait for approvals before it expires.
    pending_ttl: str = "24h"
    # How long before a grant ends its holder is warned (a grant_expiring event).
    expiry_warning: str = "15m"
    # Members of these groups may revoke any grant and decide any request.
    admin_groups: list[str] = Field(default_factory=list)
    # How often pending requests are expired and expiry events sent.
    sweep_interval_seconds: float = Field(15, gt=0)
    resources: dict[str, ResourceSettings] = Field(default_factory=dict)
    rules: list[RuleSettings] = Field(default_factory=list)
    standing: list[StandingSettings] = Field(default_factory=list)

    @field_validator("pending_ttl", "expiry_warning")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        return _duration(value)

    @field_validator("admin_groups")
    @classmethod
    def _valid_groups(cls, values: list[str]) -> list[str]:
        return _groups(values)

    @field_validator("resources")
    @classmethod
    def _valid_names(cls, values: dict[str, ResourceSettings]) -> dict[str, ResourceSettings]:
        for name in values:
            if not _RESOURCE_NAME.fullmatch(name):
                raise ValueError(
                    f"invalid resource name {name!r}: lower-case letters, digits, '.', '_' and '-'"
                )
        return values

    @model_validator(mode="after")
    def _references(self) -> PolicySettings:
        known = ", ".join(sorted(self.resources)) or "none defined"
        for i, rule in enumerate(self.rules):
            if rule.resource not in self.resources:
                raise ValueError(f"rules[{i}]: unknown resource {rule.resource!r} (resources: {known})")
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(self.standing):
            if entry.resource not in self.resources:
                raise ValueError(f"standing[{i}]: unknown resource {entry.resource!r} (resources: {known})")
            if (entry.principal, entry.resource) in seen:
                raise ValueError(f"standing[{i}]: {entry.principal} on {entry.resource} is listed twice")
            seen.add((entry.principal, entry.resource))
        for name, spec in self.resources.items():
            approvers = [g for rule in self.rules if rule.resource == name for g in rule.approver_groups]
            if spec.review_every and not (spec.reviewers or approvers or self.admin_groups):
                raise ValueError(
                    f"resources.{name}: review_every is set but nobody reviews: set reviewers, or "
                    "approver_groups on its rules, or admin_groups"
                )
        return self

    def decoys(self) -> DecoySet:
        """Every resource's decoys, for the data plane's lookup."""
        return DecoySet(entry for spec in self.resources.values() for entry in spec.decoy_entries())

    def build(self) -> Policy:
        resources = tuple(
            Resource(
                name,
                tuple(ResourcePath(*parse_resource(p)) for p in spec.paths),
                spec.description,
                spec.protected,
                spec.terms.strip(),
                spec.review(),
            )
            for name, spec in self.resources.items()
        )
        return Policy(
            resources=resources,
            rules=tuple(r.build() for r in self.rules),
            standing=tuple(
                StandingAccess(s.principal, s.resource, frozenset(Action(a) for a in s.actions))
                for s in self.standing
            ),
            pending_ttl=parse_duration(self.pending_ttl),
            expiry_warning=parse_duration(self.expiry_warning),
            admin_groups=frozenset(self.admin_groups),
        )
