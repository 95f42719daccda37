"""The `[web]` section: how people sign in to the web pages, and how their session cookie is kept."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OidcSettings(_Section):
    """OpenID Connect sign-in (authorization code flow with PKCE). Off while `issuer` is empty."""

    issuer: str = ""
    client_id: str = ""
    # Confidential clients: prefer client_secret_file (or GRANTGATE_OIDC_CLIENT_SECRET) over the file itself.
    client_secret: str = ""
    client_secret_file: str = ""
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    # The ID token claim that names the principal. "sub" (the default) is the one the OpenID spec makes
    # unique and stable per issuer. "email" is taken only with email_verified = true. Any other claim
    # (e.g. "preferred_username", which the spec says is neither unique nor stable) trusts the provider
    # never to give that value to another person. Changing it renames everyone: existing principals,
    # grants and requests keep the old names and nobody signs in as them any more.
    principal_claim: str = "sub"
    # The claim listing the principal's groups ("": groups are managed in GrantGate, not by the provider).
    groups_claim: str = "groups"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"])
    leeway_seconds: int = Field(60, ge=0, le=600)
    # A CA bundle for an issuer with a private CA.
    ca_file: str = ""
    # Shown on the sign-in button.
    display_name: str = "single sign-on"

    @field_validator("issuer")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _client_needed(self) -> OidcSettings:
        if self.issuer and not self.client_id:
            raise ValueError("oidc.client_id is required when oidc.issuer is set")
        if self.issuer and "openid" not in self.scopes:
            raise ValueError("oidc.scopes must include openid")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


class TrustedHeaderSettings(_Section):
    """Identity headers set by an SSO proxy (oauth2-proxy, ...) in front of the control listener.

    Off by default: anyone who can reach the listener could otherwise claim any name. Only requests
    whose peer address is in `proxies` are believed.
    """

    enabled: bool = False
    proxies: list[str] = Field(default_factory=list)
    user_header: str = "X-Forwarded-User"
    groups_header: str = "X-Forwarded-Groups"
    # Whether the groups header replaces the principal's stored groups.
    sync_groups: bool = True

    @field_validator("proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return v

    @model_validator(mode="after")
    def _proxies_needed(self) -> TrustedHeaderSettings:
        if self.enabled and not self.proxies:
            raise ValueError("trusted_headers.proxies must list the SSO proxy's addresses when enabled")
        return self


def is_loopback(host: str) -> bool:
    """Whether a listener bound to `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dev_login_refusal(settings: WebSettings, control_host: str) -> str | None:
    """Why this set-up may not start, or None: the dev sign-in makes whoever reaches the page anyone."""
    if settings.dev_login and not is_loopback(control_host):
        return (
            f"[web] dev_login lets anyone who reaches the control listener sign in as anyone, so it needs "
            f"[server] control_host on loopback (127.0.0.1), not {control_host!r}: turn dev_login off"
        )
    return None


class WebSettings(_Section):
    # A sign-in page that lets anyone pick any principal: for `grantgate demo` and tests only. `serve`
    # refuses it unless the control listener is bound to a loopback address.
    dev_login: bool = False
    session_hours: float = Field(8, gt=0, le=24 * 30)
    cookie_name: str = "grantgate_session"
    # Lax (not Strict): the OpenID provider's redirect back is a cross-site navigation that must carry it.
    cookie_samesite: Literal["Lax", "Strict"] = "Lax"
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    trusted_headers: TrustedHeaderSettings = Field(default_factory=TrustedHeaderSettings)
