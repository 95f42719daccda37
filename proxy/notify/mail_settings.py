"""The `[email]` section: notifications by SMTP (STARTTLS and authentication) for teams without Slack."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EmailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    host: str = ""
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True  # refuse to send in the clear: STARTTLS before authenticating
    ca_file: str = ""  # a private CA for the server's certificate; default: the system's
    username: str = ""
    password: str = ""  # prefer GRANTGATE_SMTP_PASSWORD
    from_address: str = ""
    # Where mail for a principal goes: its own address below, else principal@domain (a principal that
    # is already an address is used as it is).
    domain: str = ""
    addresses: dict[str, str] = Field(default_factory=dict)
    # New requests go to their approver groups' lists, e.g. { security = "security@example.com" }.
    group_addresses: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(10, gt=0, le=60)

    def smtp_password(self) -> str:
        return os.environ.get("GRANTGATE_SMTP_PASSWORD", "") or self.password

    def address_of(self, principal: str) -> str | None:
        if principal in self.addresses:
            return self.addresses[principal]
        if "@" in principal:
            return principal
        return f"{principal}@{self.domain}" if self.domain else None

    @model_validator(mode="after")
    def _complete(self) -> EmailSettings:
        if self.enabled:
            if not self.host or not self.from_address:
                raise ValueError("host and from_address are required when enabled")
            if self.username and not self.starttls:
                raise ValueError("authentication needs starttls: a password is never sent in the clear")
        return self
