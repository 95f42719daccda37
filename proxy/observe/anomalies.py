"""Anomaly detectors (pure): fed events and the time, they return the alerts those events deserve.

Each rule is one small detector with its own bounded memory; `Detectors` runs the enabled ones and
applies a cooldown so one incident raises one alert, not one per request.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from proxy.audit.records import control_record, event_kind, subject_key
from proxy.audit.resources import ResourceCatalog
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.observe.models import KnownModels, Model, Ranges, ShardRead, Tally
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


class Lru(OrderedDict[str, Any]):
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
        self._seen: Lru = Lru()  # principal -> [deque[(t, bytes)], total]

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
        self._seen: Lru = Lru()

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


class WholeModel:
    """One principal reading more than `share` of one model's bytes within `window` seconds (or parts of
    `distinct` models): a model being copied out, however it is split.

    Per event this only notes the range read (`observe` never fires): the ranges are flushed to the
    store (proxy/observe/model_pulls.py) and `judge` sums one principal's reads from every replica and
    worker, each distinct byte once, so parallel ranged readers, retries, sessions and replicas neither
    double count nor hide a pull.
    """

    kind = "whole_model"

    def __init__(
        self, models: KnownModels, share: float, window: float, distinct: int, catalog: ResourceCatalog
    ) -> None:
        self.models, self.share, self.window, self.distinct = models, share, window, distinct
        self.catalog = catalog
        # (principal, model, shard) -> (distinct ranges read since the last flush, grants used)
        self._pending: dict[tuple[str, str, str], tuple[Ranges, dict[str, None]]] = {}

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
        assert event.key is not None
        size = model.shards[event.key]
        start = min(event.range_start, size)
        ranges, grants = self._pending.setdefault((event.principal, model.name, event.key), (Ranges(), {}))
        ranges.add(start, min(start + event.bytes_out, size))
        grants.update(dict.fromkeys(event.grant_ids))
        return []

    def take(self) -> list[ShardRead]:
        """The ranges read since the last call, merged per shard, to flush to the store."""
        pending, self._pending = self._pending, {}
        return [
            ShardRead(principal, model, shard, start, end, tuple(grants))
            for (principal, model, shard), (ranges, grants) in pending.items()
            for start, end in zip(ranges.starts, ranges.ends, strict=True)
        ]

    def judge(self, principal: str, tally: Tally, flushed: set[str], now: float) -> list[Finding]:
        """What `principal`'s reads in the window (`tally`, summed over every replica) deserve, for the
        models in `flushed` (those just read). Each finding is to be claimed before it is raised."""
        found = []
        for name in sorted(flushed):
            shard = next((s for m, s in tally.ranges if m == name), None)
            model = self.models.catalog.model_of(_bucket_of(name), shard)
            if model is None or not model.size:
                continue
            read, shards = tally.bytes_read(model)
            if read / model.size > self.share:
                found.append(self._pulled(principal, model, read, shards, list(tally.grants[name]), now))
        names = tally.models()
        if self.distinct and len(names) >= self.distinct:
            grants = list(dict.fromkeys(g for n in names for g in tally.grants[n]))
            message = (
                f"{principal} read from {len(names)} models within {self.window:g}s "
                f"(threshold {self.distinct})"
            )
            details = {"models": names, "window_seconds": self.window, "threshold_models": self.distinct}
            found.append(self._finding(f"{principal}|models", principal, message, grants, details, now))
        return found

    def _pulled(
        self, principal: str, model: Model, read: int, shards: int, grants: list[str], now: float
    ) -> Finding:
        share = read / model.size
        message = (
            f"{principal} read {share:.0%} of model {model.name} ({read} of {model.size} bytes, "
            f"{shards} of {len(model.shards)} shards) within {self.window:g}s"
        )
        details = {
            "model": model.name,
            "share": round(share, 4),
            "bytes": read,
            "model_bytes": model.size,
            "shards_read": shards,
            "shards": len(model.shards),
            "window_seconds": self.window,
        }
        return self._finding(
            f"{principal}|{model.name}", principal, message, grants, details, now, model.bucket, model.prefix
        )

    def _finding(
        self,
        subject: str,
        principal: str,
        message: str,
        grants: list[str],
        details: dict[str, Any],
        now: float,
        bucket: str = "",
        prefix: str = "",
    ) -> Finding:
        resource = (self.catalog.name_for(bucket, prefix) or f"s3://{bucket}") if bucket else None
        alert = AnomalyAlert(
            self.kind,
            "critical",
            message,
            now,
            principal=principal,
            resource=resource,
            grant_id=grants[0] if grants else None,
            details={**details, "grant_ids": grants},
        )
        return Finding(subject, alert)


def _bucket_of(model_name: str) -> str:
    return model_name.removeprefix("s3://").partition("/")[0]


def with_justifications(alert: AnomalyAlert, justifications: Mapping[str, str]) -> AnomalyAlert:
    """The alert naming the justification each grant it used was granted on."""
    grants = [{"id": g, "justification": justifications.get(g, "")} for g in alert.details["grant_ids"]]
    said = "; ".join(f"{g['id']}: {g['justification'] or '(none given)'}" for g in grants)
    return replace(
        alert,
        message=f"{alert.message}, under {said}" if grants else alert.message,
        details={**alert.details, "grants": grants},
    )


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
        self._last: Lru = Lru()
        self.new_readers: NewGroupReader | None = None
        self.whole_model: WholeModel | None = None
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
            self.whole_model = WholeModel(models, w.share, w.window_seconds, w.models, catalog)
            rules.append(self.whole_model)
        if not settings.enabled:
            rules, self.whole_model = [], None
        self.rules = rules

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
                alerts.append(self.responded(finding))
        return alerts

    def responded(self, finding: Finding) -> AnomalyAlert:
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
