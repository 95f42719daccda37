"""The `[audit]`, `[metrics]` and `[anomalies]` sections of the configuration, validated at start."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# What an anomaly rule does besides alerting: "suspend" takes the grant it was seen under out of
# service until an approver re-confirms it (`grantgate audit resume GRANT_ID`).
Response = Literal["alert", "suspend"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _s3_patterns(values: list[str]) -> list[str]:
    for value in values:
        if not value.startswith("s3://") or len(value) <= len("s3://"):
            raise ValueError(f"resource patterns look like s3://bucket/prefix, got {value!r}")
    return values


class AuditSettings(_Section):
    # Write the durable, hash-chained audit trail to the store (stdout lines are always written).
    enabled: bool = True
    # "requests": one stored record per S3 request. "usage": allowed requests are rolled up per grant
    # (objects, bytes, first/last use) and stored as chained usage records at each flush; refused and
    # failed requests are still stored one by one while `record_denials` is on.
    data_plane: Literal["requests", "usage"] = "requests"
    record_denials: bool = True
    flush_interval_seconds: float = Field(1.0, gt=0, le=60)
    batch_size: int = Field(500, ge=1, le=10_000)
    # Events waiting for the store; past this, new events are dropped and counted (never blocking S3).
    queue_size: int = Field(100_000, ge=100)
    # Groups that may read the whole trail through the API, besides the policy's admin groups.
    reader_groups: list[str] = Field(default_factory=list)
    # Where batches wait on local disk (fsync'd) while the store is unreachable, to be written once it
    # is back (proxy/audit/spool.py); relative to the config file. Give each replica its own.
    spool_dir: str = "audit-spool"
    # Every this many seconds worker 0 logs the chain's head as an `audit_anchor` line (when it moved; 0:
    # never). Shipped off the host with the logs, anchors let `grantgate audit verify --anchor` catch a
    # store whose chain was rebuilt or cut back, which the chain alone cannot show.
    anchor_interval_seconds: float = Field(60, ge=0)


class MetricsSettings(_Section):
    enabled: bool = True
    # Served on the control listener at `path`; with `port` set, also on a listener of its own.
    path: str = "/metrics"
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    # A file holding the bearer token scrapers must send (`Authorization: Bearer ...`) on both listeners;
    # GRANTGATE_METRICS_TOKEN wins over it. Empty and unset: /metrics needs no token.
    token_file: str = ""
    # Bytes per principal (one series per principal: keep off for large populations).
    per_principal: bool = False
    # Names for areas of buckets, used as the `resource` label (and in audit) until the access policy
    # declares its own resources: name -> ["s3://bucket/prefix", ...]. Unnamed areas are labelled by
    # bucket, and buckets no grant covers as "other", so label values stay bounded.
    resources: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("metrics path must start with /")
        return v

    @field_validator("resources")
    @classmethod
    def _patterns(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for patterns in v.values():
            _s3_patterns(patterns)
        return v


class ExfiltrationRule(_Section):
    """Bytes downloaded by one principal within a sliding window above a threshold.

    Counted per gateway process (each replica sees its own share of the traffic); for a fleet-wide
    figure, alert on `grantgate_principal_sent_bytes_total` with `[metrics] per_principal` on.
    """

    enabled: bool = True
    window_seconds: float = Field(3600, gt=0)
    threshold_bytes: int = Field(10 * 1024**3, ge=1)
    response: Response = "alert"


class OutsideNetworkRule(_Section):
    """Use of a grant from a source address outside the networks allowed for the resource."""

    enabled: bool = True
    # resource name or s3://bucket/prefix -> allowed CIDRs. Resources not listed are not checked.
    networks: dict[str, list[str]] = Field(default_factory=dict)
    response: Response = "alert"

    @field_validator("networks")
    @classmethod
    def _cidrs(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for resource, cidrs in v.items():
            for cidr in cidrs:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise ValueError(f"networks for {resource!r}: {cidr!r} is not a CIDR") from None
        return v


class NewGroupReaderRule(_Section):
    """A principal from a group that never read a resource starts reading it.

    Only resources that already have readers are watched, so a new deployment does not alert on
    every first read.
    """

    enabled: bool = True
    response: Response = "alert"


class DenialBurstRule(_Section):
    """Many refused requests from one principal (or one address, when unauthenticated) in a window."""

    enabled: bool = True
    window_seconds: float = Field(60, gt=0)
    threshold: int = Field(20, ge=1)


class BreakGlassRule(_Section):
    enabled: bool = True


class OutsideHoursRule(_Section):
    """Allowed requests outside working hours (`start` to `end` on `days`, in `timezone`)."""

    enabled: bool = False
    start: str = "07:00"
    end: str = "20:00"
    days: list[str] = Field(default_factory=lambda: list(DAYS[:5]))
    timezone: str = "UTC"
    response: Response = "alert"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, v: str) -> str:
        if not _CLOCK.match(v):
            raise ValueError(f"expected HH:MM, got {v!r}")
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        days = [d.strip().lower()[:3] for d in v]
        unknown = [d for d in days if d not in DAYS]
        if unknown:
            raise ValueError(f"unknown days {unknown}: use {', '.join(DAYS)}")
        return days

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class DecoyTouchedRule(_Section):
    """A read of a decoy object (`decoys` of a `[policy.resources.*]`): always critical.

    "suspend" (the default) takes every grant of the principal out of service at once, on every
    replica, cutting their transfers in flight, until an approver re-confirms each grant.
    """

    enabled: bool = True
    response: Response = "suspend"


class WholeModelRule(_Section):
    """One principal reading most of one model's bytes (`share` of them) within `window_seconds`, or
    parts of `models` different models. Models are learned from a periodic, bounded listing of the
    policy's resources (worker 0, every `refresh_seconds`); byte ranges are counted once, whatever the
    retries, parallel ranged readers, sessions, workers or replicas (summed in the store,
    proxy/observe/model_pulls.py).
    """

    enabled: bool = True
    share: float = Field(0.8, gt=0, le=1)
    window_seconds: float = Field(3600, gt=0)
    # Distinct models read (any part of them) within the window that also fire; 0: off.
    models: int = Field(0, ge=0)
    refresh_seconds: float = Field(300, ge=1)
    # The listing's bounds: pages of up to 1000 keys per resource path, and keys in all.
    max_pages: int = Field(20, ge=1, le=1000)
    max_keys: int = Field(100_000, ge=1)
    response: Response = "alert"


class AnomalySettings(_Section):
    enabled: bool = True
    # An alert of one kind about the same subject is raised at most once per cooldown.
    cooldown_seconds: float = Field(300, ge=0)
    exfiltration: ExfiltrationRule = Field(default_factory=ExfiltrationRule)
    outside_network: OutsideNetworkRule = Field(default_factory=OutsideNetworkRule)
    new_group_reader: NewGroupReaderRule = Field(default_factory=NewGroupReaderRule)
    denial_burst: DenialBurstRule = Field(default_factory=DenialBurstRule)
    break_glass: BreakGlassRule = Field(default_factory=BreakGlassRule)
    outside_hours: OutsideHoursRule = Field(default_factory=OutsideHoursRule)
    decoy_touched: DecoyTouchedRule = Field(default_factory=DecoyTouchedRule)
    whole_model: WholeModelRule = Field(default_factory=WholeModelRule)


@dataclass(frozen=True, slots=True)
class ObserveSettings:
    """The sections the observers read: `[metrics]`, `[audit]` and `[anomalies]`."""

    metrics: MetricsSettings
    audit: AuditSettings
    anomalies: AnomalySettings
