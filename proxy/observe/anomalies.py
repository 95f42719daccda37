"""Anomaly detectors (pure): fed events and the time, they return the alerts those events deserve.

Each rule is one small detector with its own bounded memory; `Detectors` runs the enabled ones and
applies a cooldown so one incident raises one alert, not one per request.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from proxy.audit.records import control_record, event_kind, subject_key
from proxy.audit.resources import ResourceCatalog
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.observe.models import KnownModels, Model, Ranges
from proxy.observe.settings import DAYS, AnomalySettings

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Memory bound per detector: the least recently seen subjects are forgotten first.
MAX_SUBJECTS = 10_000
SUSPEND = "suspend_grant"
SUSPEND_PRINCIPAL = "suspend_principal"  # every grant the alert's principal holds
BREAK_GLASS_EVENTS = frozenset({"break_glass_used"})
SOURCE_NETWORK = "source_network"  # the data plane's deny reason for a grant used from elsewhere


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector saw: the alert it deserves, and what the cooldown is about (one alert per subject).
    Whether anything is done about it (`response`) is decided by `Detectors`, from the settings."""

    subject: str
    alert: AnomalyAlert
    # What a "suspend" response takes out of service: the grant seen, or all of the principal's.
    suspends: str = "grant"


class Detector(Protocol):
    kind: str

    def observe(self, event: Any, now: float) -> list[Finding]: ...


class _Lru(OrderedDict[str, Any]):
    def touch(self, key: str, default: Any) -> Any:
        if key in self:
            self.move_to_end(key)
        else:
            self[key] = default
            while len(self) > MAX_SUBJECTS:
                self.popitem(last=False)
        return self[key]


def _allowed(event: Any) -> bool:
    return isinstance(event, RequestEvent) and event.decision == "allow" and bool(event.grant_ids)


def _resource_of(catalog: ResourceCatalog, event: RequestEvent) -> str:
    return catalog.name_for(event.bucket, subject_key(event)) or f"s3://{event.bucket}"


def _granted_use(
    kind: str,
    severity: str,
    message: str,
    event: RequestEvent,
    catalog: ResourceCatalog,
    now: float,
    details: dict[str, Any] | None = None,
) -> Finding:
    """What a principal did under a grant, one alert per principal: who, on what, under which grant,
    from where."""
    alert = AnomalyAlert(
        kind,
        severity,
        message,
        now,
        principal=event.principal,
        resource=_resource_of(catalog, event),
        grant_id=event.grant_ids[0],
        source_ip=event.source_ip,
        request_id=event.request_id,
        details=details or {},
    )
    return Finding(event.principal or "", alert)


class Exfiltration:
    """Bytes sent to one principal within a sliding window crossing a threshold: a model being copied out."""

    kind = "exfiltration"

    def __init__(self, window: float, threshold: int, catalog: ResourceCatalog) -> None:
        self.window, self.threshold, self.catalog = window, threshold, catalog
        self._seen: _Lru = _Lru()  # principal -> [deque[(t, bytes)], total]

    def observe(self, event: Any, now: float) -> list[Finding]:
        if not _allowed(event) or event.bytes_out <= 0 or not event.principal:
            return []
        entry = self._seen.touch(event.principal, [deque(), 0])
        samples: deque[tuple[float, int]] = entry[0]
        while samples and samples[0][0] <= now - self.window:
            entry[1] -= samples.popleft()[1]
        before = entry[1]
        samples.append((now, event.bytes_out))
        entry[1] += event.bytes_out
        if not before <= self.threshold < entry[1]:
            return []
        return [
            _granted_use(
                self.kind,
                "critical",
                f"{event.principal} downloaded {entry[1]} bytes in {self.window:g}s "
                f"(threshold {self.threshold})",
                event,
                self.catalog,
                now,
                {"bytes": entry[1], "window_seconds": self.window, "threshold_bytes": self.threshold},
            )
        ]


class OutsideNetwork:
    """A grant used, or tried, from an address outside the networks allowed for its resource.

    The policy's source networks are enforced by the data plane, so those attempts arrive refused
    (deny reason `source_network`); networks listed only under `[anomalies]` are watched, not enforced.
    """

    kind = "outside_network"

    def __init__(self, networks: Mapping[str, Iterable[str]], catalog: ResourceCatalog) -> None:
        self.catalog = catalog
        self.networks: dict[str, tuple[IpNetwork, ...]] = {
            selector: tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
            for selector, cidrs in networks.items()
        }

    def observe(self, event: Any, now: float) -> list[Finding]:
        refused = (
            isinstance(event, RequestEvent)
            and event.decision == "deny"
            and event.deny_reason == SOURCE_NETWORK
        )
        if not (_allowed(event) or refused) or not self.networks:
            return []
        address = _address(event.source_ip)
        found = []
        for selector, allowed in self.networks.items():
            if not self.catalog.matches(selector, event.bucket, subject_key(event)):
                continue
            if address is not None and any(
                address in net for net in allowed if net.version == address.version
            ):
                continue
            grant = event.grant_ids[0] if event.grant_ids else None
            used = f"used grant {grant}" if grant else "was refused"
            found.append(
                Finding(
                    f"{event.principal}|{selector}|{event.source_ip}",
                    AnomalyAlert(
                        self.kind,
                        severity="critical",
                        message=(
                            f"{event.principal} {used} on {selector} from "
                            f"{event.source_ip or 'an unknown address'}, "
                            f"outside {', '.join(map(str, allowed))}"
                        ),
                        principal=event.principal,
                        resource=_named(self.catalog, selector, event),
                        grant_id=grant,
                        source_ip=event.source_ip,
                        request_id=event.request_id,
                        details={"allowed_networks": [str(n) for n in allowed], "refused": refused},
                        at=now,
                    ),
                )
            )
        return found


def _named(catalog: ResourceCatalog, selector: str, event: RequestEvent) -> str:
    """The resource's name for an s3:// selector that falls in a named area, else the selector."""
    if selector.startswith("s3://"):
        return catalog.name_for(event.bucket, subject_key(event)) or selector
    return selector


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


class NewGroupReader:
    """A principal none of whose groups ever read a resource starts reading it.

    Resources nobody has read yet are only learned, so a new deployment is quiet. `learned` collects
    the (resource, group, principal, time) pairs to persist, so every replica and restart remembers them.
    """

    kind = "new_group_reader"

    def __init__(self, known: Iterable[tuple[str, str]], catalog: ResourceCatalog) -> None:
        self.catalog = catalog
        self.known: dict[str, set[str]] = {}
        for resource, group in known:
            self.known.setdefault(resource, set()).add(group)
        self.learned: list[tuple[str, str, str, datetime]] = []

    def observe(self, event: Any, now: float) -> list[Finding]:
        if not _allowed(event) or event.action != "read" or not event.groups or not event.principal:
            return []
        resource = _resource_of(self.catalog, event)
        readers = self.known.setdefault(resource, set())
        new_groups = [g for g in event.groups if g not in readers]
        if not new_groups:
            return []
        familiar = len(new_groups) < len(event.groups)
        had_readers = bool(readers)
        readers.update(new_groups)
        moment = datetime.fromtimestamp(now, UTC)
        self.learned.extend((resource, g, event.principal, moment) for g in new_groups)
        if familiar or not had_readers:
            return []
        return [
            Finding(
                f"{resource}|{','.join(event.groups)}",
                AnomalyAlert(
                    self.kind,
                    severity="warning",
                    message=(
                        f"{event.principal} (groups {', '.join(event.groups)}) read {resource}, which no one "
                        "in those groups has read before"
                    ),
                    principal=event.principal,
                    resource=resource,
                    grant_id=event.grant_ids[0],
                    source_ip=event.source_ip,
                    request_id=event.request_id,
                    details={"groups": list(event.groups), "known_groups": sorted(readers - set(new_groups))},
                    at=now,
                ),
            )
        ]

    def take_learned(self) -> list[tuple[str, str, str, datetime]]:
        learned, self.learned = self.learned, []
        return learned


class DenialBurst:
    """Many refused requests from one principal (or one address, for unauthenticated callers)."""

    kind = "denial_burst"

    def __init__(self, window: float, threshold: int) -> None:
        self.window, self.threshold = window, threshold
        self._seen: _Lru = _Lru()

    def observe(self, event: Any, now: float) -> list[Finding]:
        if not isinstance(event, RequestEvent) or event.decision != "deny":
            return []
        subject = event.principal or f"address {event.source_ip}"
        times: deque[float] = self._seen.touch(subject, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        if len(times) != self.threshold:
            return []
        return [
            Finding(
                subject,
                AnomalyAlert(
                    self.kind,
                    severity="warning",
                    message=f"{self.threshold} refused requests from {subject} within {self.window:g}s",
                    principal=event.principal,
                    source_ip=event.source_ip,
                    request_id=event.request_id,
                    details={"count": len(times), "window_seconds": self.window, "last_reason": event.reason},
                    at=now,
                ),
            )
        ]


class BreakGlass:
    """Every break-glass use is an alert, always."""

    kind = "break_glass"

    def observe(self, event: Any, now: float) -> list[Finding]:
        if isinstance(event, RequestEvent | AnomalyAlert) or event_kind(event) not in BREAK_GLASS_EVENTS:
            return []
        record = control_record(event, datetime.fromtimestamp(now, UTC))
        who = record.principal or "someone"
        return [
            Finding(
                f"{who}|{record.grant_id}",
                AnomalyAlert(
                    self.kind,
                    severity="critical",
                    message=f"break-glass access used by {who} on {record.target or record.resource or '?'}",
                    principal=record.principal,
                    resource=record.resource or record.target,
                    grant_id=record.grant_id,
                    details=record.event,
                    at=now,
                ),
            )
        ]


class OutsideHours:
    """Allowed requests outside the configured working hours and days."""

    kind = "outside_hours"

    def __init__(
        self, start: str, end: str, days: Iterable[str], zone: str, catalog: ResourceCatalog
    ) -> None:
        self.start, self.end = time.fromisoformat(start), time.fromisoformat(end)
        self.days = frozenset(DAYS.index(d) for d in days)
        self.zone = ZoneInfo(zone)
        self.catalog = catalog

    def within(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        clock = local.time()
        if self.start <= self.end:
            return local.weekday() in self.days and self.start <= clock < self.end
        # An overnight shift (22:00-06:00): the early hours belong to the previous day's shift.
        if clock >= self.start:
            return local.weekday() in self.days
        return clock < self.end and (local.weekday() - 1) % 7 in self.days

    def observe(self, event: Any, now: float) -> list[Finding]:
        if not _allowed(event) or not event.principal:
            return []
        moment = datetime.fromtimestamp(now, UTC)
        if self.within(moment):
            return []
        return [
            _granted_use(
                self.kind,
                "warning",
                f"{event.principal} used its access at {moment.astimezone(self.zone):%a %H:%M %Z}",
                event,
                self.catalog,
                now,
            )
        ]


class DecoyTouched:
    """A decoy read, by anyone, under any grant or none: nobody has a reason to, so it is critical."""

    kind = "decoy_touched"

    def __init__(self, catalog: ResourceCatalog) -> None:
        self.catalog = catalog

    def observe(self, event: Any, now: float) -> list[Finding]:
        if not isinstance(event, RequestEvent) or not event.decoy or not event.principal:
            return []
        allowed = event.decision == "allow"
        alert = AnomalyAlert(
            self.kind,
            "critical",
            f"{event.principal} touched decoy {event.decoy} ({event.operation}, "
            f"{'allowed' if allowed else 'refused'}) from {event.source_ip or 'an unknown address'}",
            now,
            principal=event.principal,
            resource=_resource_of(self.catalog, event),
            grant_id=event.grant_ids[0] if event.grant_ids else None,
            source_ip=event.source_ip,
            request_id=event.request_id,
            details={
                "decoy": event.decoy,
                "operation": event.operation,
                "allowed": allowed,
                "grant_ids": list(event.grant_ids),
                "user_agent": event.user_agent,
            },
        )
        return [Finding(f"{event.principal}|{event.decoy}", alert, suspends="principal")]


@dataclass(slots=True)
class _Pull:
    """What one principal has read of one model since `started`: distinct byte ranges per shard."""

    started: float
    ranges: dict[str, Ranges] = field(default_factory=dict)
    read: int = 0
    grants: dict[str, None] = field(default_factory=dict)  # in order of first use
    fired: bool = False


class WholeModel:
    """One principal reading more than `share` of one model's bytes within `window` seconds (or parts of
    `distinct` models): a model being copied out, however it is split.

    Bytes are counted as distinct ranges of each shard, so parallel ranged readers, retries and several
    sessions or workers (all of whose events reach worker 0) neither double count nor hide a pull.
    """

    kind = "whole_model"

    def __init__(
        self, models: KnownModels, share: float, window: float, distinct: int, catalog: ResourceCatalog
    ) -> None:
        self.models, self.share, self.window, self.distinct = models, share, window, distinct
        self.catalog = catalog
        self._pulls: _Lru = _Lru()  # "principal|model" -> _Pull
        self._touched: _Lru = _Lru()  # principal -> {model name: last read}

    def observe(self, event: Any, now: float) -> list[Finding]:
        if (
            not _allowed(event)
            or event.operation != "GetObject"
            or not event.principal
            or event.range_start is None
            or event.bytes_out <= 0
        ):
            return []
        model = self.models.catalog.model_of(event.bucket, event.key)
        if model is None:
            return []
        found = self._pulled(event, model, now)
        return found + self._many(event, model, now)

    def _pulled(self, event: RequestEvent, model: Model, now: float) -> list[Finding]:
        subject = f"{event.principal}|{model.name}"
        pull: _Pull | None = self._pulls.get(subject)
        if pull is None or now - pull.started > self.window:
            pull = _Pull(now)
        self._pulls.touch(subject, pull)
        self._pulls[subject] = pull
        assert event.key is not None and event.range_start is not None
        size = model.shards[event.key]
        start = min(event.range_start, size)
        end = min(start + event.bytes_out, size)
        pull.read += pull.ranges.setdefault(event.key, Ranges()).add(start, end)
        pull.grants.update(dict.fromkeys(event.grant_ids))
        share = pull.read / model.size
        if pull.fired or share <= self.share:
            return []
        pull.fired = True
        grants = list(pull.grants)
        found = _granted_use(
            self.kind,
            "critical",
            f"{event.principal} read {share:.0%} of model {model.name} ({pull.read} of {model.size} "
            f"bytes, {len(pull.ranges)} of {len(model.shards)} shards) within {self.window:g}s",
            event,
            self.catalog,
            now,
            {
                "model": model.name,
                "share": round(share, 4),
                "bytes": pull.read,
                "model_bytes": model.size,
                "shards_read": len(pull.ranges),
                "shards": len(model.shards),
                "grant_ids": grants,
                "window_seconds": self.window,
            },
        )
        return [Finding(subject, replace(found.alert, grant_id=grants[0]))]

    def _many(self, event: RequestEvent, model: Model, now: float) -> list[Finding]:
        if not self.distinct:
            return []
        assert event.principal is not None
        touched: dict[str, float] = self._touched.touch(event.principal, {})
        before = len(touched)
        touched[model.name] = now
        for name in [n for n, t in touched.items() if t <= now - self.window]:
            del touched[name]
        if not before < self.distinct <= len(touched):
            return []
        names = sorted(touched)
        found = _granted_use(
            self.kind,
            "critical",
            f"{event.principal} read from {len(names)} models within {self.window:g}s "
            f"(threshold {self.distinct})",
            event,
            self.catalog,
            now,
            {"models": names, "window_seconds": self.window, "threshold_models": self.distinct},
        )
        return [replace(found, subject=f"{event.principal}|models")]


class Detectors:
    """The enabled rules, with one cooldown per (kind, subject)."""

    def __init__(
        self,
        settings: AnomalySettings,
        catalog: ResourceCatalog,
        *,
        known_readers: Iterable[tuple[str, str]] = (),
        networks: Mapping[str, Iterable[str]] | None = None,
        models: KnownModels | None = None,
    ) -> None:
        """`models`: the model catalogue the whole_model rule looks shards up in, kept current by
        worker 0's listing; without it that rule is off."""
        self.settings = settings
        self.cooldown = settings.cooldown_seconds
        self._last: _Lru = _Lru()
        self.new_readers: NewGroupReader | None = None
        rules: list[Detector] = []
        s = settings
        if s.exfiltration.enabled:
            rules.append(Exfiltration(s.exfiltration.window_seconds, s.exfiltration.threshold_bytes, catalog))
        wanted_networks = s.outside_network.networks if networks is None else networks
        if s.outside_network.enabled and wanted_networks:
            rules.append(OutsideNetwork(wanted_networks, catalog))
        if s.new_group_reader.enabled:
            self.new_readers = NewGroupReader(known_readers, catalog)
            rules.append(self.new_readers)
        if s.denial_burst.enabled:
            rules.append(DenialBurst(s.denial_burst.window_seconds, s.denial_burst.threshold))
        if s.break_glass.enabled:
            rules.append(BreakGlass())
        h = s.outside_hours
        if h.enabled:
            rules.append(OutsideHours(h.start, h.end, h.days, h.timezone, catalog))
        if s.decoy_touched.enabled:
            rules.append(DecoyTouched(catalog))
        w = s.whole_model
        if w.enabled and models is not None:
            rules.append(WholeModel(models, w.share, w.window_seconds, w.models, catalog))
        self.rules = rules if settings.enabled else []

    def feed(self, event: Any, now: float) -> list[AnomalyAlert]:
        if isinstance(event, AnomalyAlert):
            return []
        alerts = []
        for rule in self.rules:
            for finding in rule.observe(event, now):
                key = f"{finding.alert.kind}|{finding.subject}"
                last = self._last.get(key)
                if last is not None and now - last < self.cooldown:
                    continue
                self._last.touch(key, now)
                self._last[key] = now
                alerts.append(self._responded(finding))
        return alerts

    def _responded(self, finding: Finding) -> AnomalyAlert:
        """The alert with what its rule's settings say to do about it."""
        alert = finding.alert
        configured = getattr(getattr(self.settings, alert.kind, None), "response", "alert")
        return replace(alert, response=_response(configured, finding))


def _response(configured: str, finding: Finding) -> str | None:
    if configured != "suspend":
        return None
    if finding.suspends == "principal" and finding.alert.principal:
        return SUSPEND_PRINCIPAL
    return SUSPEND if finding.alert.grant_id else None
