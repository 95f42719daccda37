"""Settings: a TOML file (plus a few environment overrides) validated once at start into typed values."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from proxy.access.oncall import PagerDutySettings
from proxy.access.policy_config import PolicySettings
from proxy.control.web_settings import WebSettings
from proxy.identity.trust import StsSettings
from proxy.notify.mail_settings import EmailSettings
from proxy.notify.settings import SlackSettings, WebhookSettings
from proxy.observe.settings import AnomalySettings, AuditSettings, MetricsSettings, ObserveSettings


class ConfigError(Exception):
    """A configuration problem, with a message fit to show to the operator as is."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    s3_host: str = "127.0.0.1"
    s3_port: int = Field(9000, ge=0, le=65535)
    control_host: str = "127.0.0.1"
    control_port: int = Field(9001, ge=0, le=65535)
    # Base of every link GrantGate hands out (the access-request URL in a 403).
    public_url: str = "http://127.0.0.1:9001"
    # Virtual-hosted addressing: requests for `bucket.<base>` address `bucket`. Empty: path style only.
    virtual_host_base: str = ""
    # Secret from which access-key secrets are derived and session tokens sealed. Prefer the
    # GRANTGATE_SECRET_KEY environment variable or secret_key_file over writing it here.
    secret_key: str = ""
    secret_key_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # Hosts (e.g. a load balancer) whose X-Forwarded-Host may replace Host when verifying signatures.
    trusted_proxies: list[str] = Field(default_factory=list)
    max_clock_skew_seconds: int = Field(900, ge=1)
    # How often the in-memory grant and key state checks the store for changes.
    refresh_interval_seconds: float = Field(0.5, gt=0)
    # How long the gateway keeps serving from its last known state while the store is unreachable.
    # Bounded because a revocation made meanwhile cannot be seen: 30 s caps that blind window while
    # riding out a database failover. After it, requests fail closed with ServiceUnavailable.
    state_grace_seconds: float = Field(30, gt=0)
    # Hash plain uploads that declare an x-amz-content-sha256 and refuse a mismatch before the last
    # byte reaches the bucket. AWS S3 checks this itself; keep it on for buckets that may not
    # (S3-compatible stores) or turn it off to save ~0.7 CPU-seconds per GiB uploaded.
    verify_payload_sha256: bool = True
    # S3 listener processes sharing one port (SO_REUSEPORT), each with its own event loop; 0: one per
    # CPU the process may use (its affinity and cgroup quota). Worker 0 also runs the control API, the
    # workflow and the anomaly rules, which the others feed their events; its /metrics merges every
    # worker's counts. One by default: a sidecar or a laptop wants one process.
    workers: int = Field(1, ge=0, le=256)

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")


class UpstreamSettings(_Section):
    # The real bucket's S3 endpoint. Empty: AWS S3 in `region`.
    endpoint_url: str = ""
    region: str = "us-east-1"
    # Explicit credentials are optional; otherwise botocore's chain (environment, profile, web
    # identity / IRSA, container and instance metadata) is used, as every AWS tool does.
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    profile: str = ""
    addressing: Literal["path", "virtual"] = "path"
    connect_timeout_seconds: float = Field(10, gt=0)
    # No total timeout on purpose: a 50 GB download may take an hour. A stalled socket still ends it.
    read_timeout_seconds: float = Field(120, gt=0)
    max_connections: int = Field(256, ge=1)
    verify_tls: bool = True


class StoreSettings(_Section):
    url: str = "sqlite:///grantgate.db"


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    # Access requests: resources, who may request them, approvals, standing access.
    policy: PolicySettings = Field(default_factory=PolicySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    anomalies: AnomalySettings = Field(default_factory=AnomalySettings)
    # Workload identity: STS AssumeRoleWithWebIdentity on the S3 listener.
    sts: StsSettings = Field(default_factory=StsSettings)
    # Web pages: sign-in (OpenID Connect, SSO proxy headers, demo dev sign-in) and session cookies.
    web: WebSettings = Field(default_factory=WebSettings)
    # The Slack app, and signed outbound webhooks (`[[webhooks]]` entries), see docs/slack.md.
    slack: SlackSettings = Field(default_factory=SlackSettings)
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    # Rules with `oncall_service` approve whoever PagerDuty says is on call for it.
    pagerduty: PagerDutySettings = Field(default_factory=PagerDutySettings)
    # Notifications by email (SMTP, STARTTLS and authentication) for teams without Slack.
    email: EmailSettings = Field(default_factory=EmailSettings)
    # Where relative paths in the file are resolved from (the file's directory).
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def server_key(self) -> bytes:
        """The server secret, from the environment, a file, or the config, in that order."""
        value = os.environ.get("GRANTGATE_SECRET_KEY", "")
        if not value and self.server.secret_key_file:
            path = self.resolve(self.server.secret_key_file)
            try:
                value = path.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"[server] secret_key_file {path}: cannot read it ({reason(exc)}); "
                    "create it (`grantgate init` writes one) or set GRANTGATE_SECRET_KEY"
                ) from None
        if not value:
            value = self.server.secret_key
        if len(value) < 32:
            raise ConfigError(
                "server secret key missing or shorter than 32 characters: set GRANTGATE_SECRET_KEY, "
                "[server] secret_key_file or [server] secret_key"
            )
        return value.encode()

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def observe(self) -> ObserveSettings:
        return ObserveSettings(self.metrics, self.audit, self.anomalies)

    def metrics_token(self) -> str:
        """The bearer token /metrics asks for: GRANTGATE_METRICS_TOKEN, else `[metrics] token_file`."""
        token = os.environ.get("GRANTGATE_METRICS_TOKEN", "").strip()
        if not token and self.metrics.token_file:
            path = self.resolve(self.metrics.token_file)
            try:
                token = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"[metrics] token_file {path}: {exc.strerror or exc}") from None
            if not token:
                raise ConfigError(f"[metrics] token_file {path} is empty")
        return token

    def audit_spool_dir(self) -> Path:
        """This gateway's audit spool: a subdirectory per S3 port of `[audit] spool_dir`."""
        return self.resolve(self.audit.spool_dir) / f"s3-{self.server.s3_port}"

    def store_url(self) -> str:
        """The store URL with a relative SQLite path resolved against the config file's directory."""
        url = os.environ.get("GRANTGATE_STORE_URL") or self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url


def reason(exc: Exception) -> str:
    """What went wrong with a file, without the errno and path noise of str(OSError)."""
    return getattr(exc, "strerror", None) or str(exc)


def load_settings(path: str | Path | None) -> Settings:
    """Read and validate a config file; `None` gives the defaults. Raises ConfigError with a clear message."""
    if path is None:
        return Settings()
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {file}: cannot read it ({reason(exc)})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    try:
        return Settings.model_validate({**raw, "base_dir": file.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{file}: {problems}") from None
