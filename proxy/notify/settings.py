"""The `[slack]` and `[[webhooks]]` sections of the configuration, validated at start."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.access.events import ALL_EVENTS

ANOMALY_EVENT = "anomaly_alert"
EVENT_TYPES = frozenset({e.kind for e in ALL_EVENTS} | {ANOMALY_EVENT})
_SLACK_ID = re.compile(r"^[A-Z0-9]{2,}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret(value: str, env: str) -> str:
    return os.environ.get(env, "") or value


class SlackSettings(_Section):
    enabled: bool = False
    # Prefer the environment variables GRANTGATE_SLACK_BOT_TOKEN / GRANTGATE_SLACK_SIGNING_SECRET.
    bot_token: str = ""
    signing_secret: str = ""
    # The Web API base; only tests and proxies change it.
    api_url: str = "https://slack.com/api/"
    # Where new requests for each policy resource are posted; `default_channel` for the others.
    channels: dict[str, str] = Field(default_factory=dict)
    default_channel: str = ""
    # Break-glass use and anomaly alerts.
    security_channel: str = ""
    # Slack user id -> principal. Checked first; the email lookup below is the fallback.
    users: dict[str, str] = Field(default_factory=dict)
    # Bind a Slack user to a principal by their Slack-verified email: "email" (the principal is the
    # address) or "local_part" (the part before @, only for addresses in `email_domains`). "": off.
    email_principal: Literal["", "email", "local_part"] = ""
    email_domains: list[str] = Field(default_factory=list)
    # At most one "you were denied, request access here" DM per principal and area (bucket and the
    # key's first path segment, e.g. s3://archive/models/) per interval.
    denial_dm_interval_seconds: float = Field(600, ge=0)
    timeout_seconds: float = Field(10, gt=0, le=60)

    @field_validator("users")
    @classmethod
    def _user_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for uid in value:
            if not _SLACK_ID.match(uid):
                raise ValueError(f"{uid!r} does not look like a Slack user id (e.g. U024BE7LH)")
        return value

    @field_validator("email_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in value]

    @model_validator(mode="after")
    def _complete(self) -> SlackSettings:
        if self.email_principal == "local_part" and not self.email_domains:
            raise ValueError("email_principal = 'local_part' needs email_domains, or any domain could claim")
        if self.enabled:
            if not self.token():
                raise ValueError("bot_token (or GRANTGATE_SLACK_BOT_TOKEN) is required when enabled")
            if not self.secret():
                raise ValueError("signing_secret (or GRANTGATE_SLACK_SIGNING_SECRET) is required")
            if not (self.default_channel or self.channels):
                raise ValueError("name a default_channel or a channel per resource")
        return self

    def token(self) -> str:
        return _secret(self.bot_token, "GRANTGATE_SLACK_BOT_TOKEN")

    def secret(self) -> str:
        return _secret(self.signing_secret, "GRANTGATE_SLACK_SIGNING_SECRET")

    def channel_for(self, resource: str) -> str:
        return self.channels.get(resource, self.default_channel)


class WebhookSettings(_Section):
    url: str
    # HMAC key; `secret_env` names an environment variable to read it from instead.
    secret: str = ""
    secret_env: str = ""
    # Event types to send ("*": all): request_created, request_decided, grant_created, ...
    events: list[str] = Field(default_factory=lambda: ["*"])
    timeout_seconds: float = Field(10, gt=0, le=60)
    max_attempts: int = Field(8, ge=1, le=30)
    # First retry delay; each further retry doubles it, up to `max_backoff_seconds`.
    backoff_seconds: float = Field(1.0, gt=0)
    max_backoff_seconds: float = Field(600, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"webhook url must be http(s), got {value!r}")
        return value

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - EVENT_TYPES - {"*"})
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {sorted(EVENT_TYPES)}")
        return value

    @model_validator(mode="after")
    def _has_secret(self) -> WebhookSettings:
        if not self.key():
            raise ValueError(f"webhook {self.url} needs a secret (or secret_env naming a set variable)")
        return self

    def key(self) -> bytes:
        value = os.environ.get(self.secret_env, "") if self.secret_env else self.secret
        return value.encode()

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events
