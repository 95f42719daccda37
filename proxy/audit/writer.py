"""The durable audit writer: an observer that queues events and appends them to the store in batches.

Observing costs the request one `put_nowait`; records are built, chained and written by the writer's
own task, about once per flush interval. If the store is down the batch is retried, and while the
queue is full new events are dropped and counted (the stdout audit line is still written).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from proxy.audit.records import (
    AuditRecord,
    Usage,
    alert_record,
    control_record,
    request_record,
    sliced,
    usage_of,
    usage_record,
)
from proxy.audit.resources import ResourceCatalog
from proxy.audit.sink import AuditSink
from proxy.audit.spool import UNREACHABLE
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.observe.metrics import GatewayMetrics
from proxy.observe.settings import AuditSettings

log = structlog.get_logger("grantgate.audit")

RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Readers:
    """Resource readers learned by the anomaly rules, persisted along with the next batch."""

    items: tuple[tuple[str, str, str, datetime], ...]


@dataclass
class Batch:
    records: list[AuditRecord] = field(default_factory=list)
    usage: dict[str, Usage] = field(default_factory=dict)
    readers: list[tuple[str, str, str, datetime]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.records or self.usage or self.readers)

    def add(self, item: Any, settings: AuditSettings, catalog: ResourceCatalog, now: datetime) -> None:
        """One queued item's records (pure): per request, or into usage roll-ups, as configured."""
        if isinstance(item, _Readers):
            self.readers.extend(item.items)
        elif isinstance(item, RequestEvent):
            usage = usage_of(item)
            if usage is not None:
                if usage.grant_id in self.usage:
                    self.usage[usage.grant_id].add(usage)
                else:
                    self.usage[usage.grant_id] = usage
            # An object read or written is always chained, whatever the setting: it is a receipt.
            per_request = (
                settings.data_plane == "requests"
                or (settings.record_denials and item.decision != "allow")
                or item.complete is not None
            )
            if per_request:
                self.records.append(request_record(item, catalog))
        elif isinstance(item, AnomalyAlert):
            self.records.append(alert_record(item))
        else:
            self.records.append(control_record(item, now))


async def build_batch(
    items: list[Any], settings: AuditSettings, catalog: ResourceCatalog, now: datetime
) -> Batch:
    """Records for a batch of events, built a slice at a time so requests keep flowing meanwhile."""
    batch = Batch()
    async for part in sliced(items):
        for item in part:
            batch.add(item, settings, catalog, now)
    if settings.data_plane == "usage":
        batch.records.extend(usage_record(u, now) for u in batch.usage.values())
    return batch


class AuditWriter:
    def __init__(
        self,
        audit: AuditSink,
        settings: AuditSettings,
        catalog: ResourceCatalog,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audit = audit
        self.settings = settings
        self.catalog = catalog
        self.metrics = metrics
        self.clock = clock
        self.queue: asyncio.Queue[Any] = asyncio.Queue(settings.queue_size)
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[Any] = []  # the batch being written, kept until it is

    # --- the observer side: never blocks, never raises for a full queue

    def __call__(self, event: Any) -> None:
        self._put(event)

    def remember_readers(self, items: list[tuple[str, str, str, datetime]]) -> None:
        if items:
            self._put(_Readers(tuple(items)))

    def _put(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.audit_dropped.inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("audit_queue_full", dropped=self.dropped, queue_size=self.settings.queue_size)
        if self.metrics is not None:
            self.metrics.audit_queue.set(self.queue.qsize())

    # --- the writer task

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        """Stop the task and write what is still queued, the interrupted batch first (one last try)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        items, self._inflight = [*self._inflight, *self._drain(self.queue.qsize())], []
        size = self.settings.batch_size
        for start in range(0, len(items), size):
            try:
                await self._write(items[start : start + size])
            except Exception as exc:
                log.error("audit_final_flush_failed", error=repr(exc), lost=len(items) - start)
                return

    async def _run(self) -> None:
        delay = self.settings.flush_interval_seconds
        while True:
            first = await self.queue.get()
            self._inflight = [first]
            if self.queue.qsize() < self.settings.batch_size - 1:
                # Gather a batch; under load a full batch is waiting already, so write at once.
                await asyncio.sleep(self.settings.flush_interval_seconds)
            self._inflight += self._drain(self.settings.batch_size - 1)
            while True:
                try:
                    await self._write(self._inflight)
                    self._inflight = []
                    delay = self.settings.flush_interval_seconds
                    break
                except UNREACHABLE as exc:
                    if self.metrics is not None:
                        self.metrics.audit_failures.inc()
                    log.error(
                        "audit_write_failed", error=repr(exc), events=len(self._inflight), retry_in=delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_SECONDS)
                except Exception as exc:
                    # Not the store: something in the batch itself, which no retry would mend. Written
                    # one by one, so one bad event costs only itself, not the trail behind it.
                    log.error("audit_batch_refused", error=repr(exc), events=len(self._inflight))
                    self._inflight = await self._write_each(self._inflight)
                    if not self._inflight:
                        break

    async def _write_each(self, items: list[Any]) -> list[Any]:
        """Write items one at a time and drop (counted, logged) those that cannot be written; returns
        what is left unwritten if the store fails meanwhile, for the retry loop."""
        for index, item in enumerate(items):
            try:
                await self._write([item])
            except UNREACHABLE:
                return items[index:]
            except Exception as exc:
                self.dropped += 1
                if self.metrics is not None:
                    self.metrics.audit_dropped.inc()
                log.error("audit_event_unwritable", error=repr(exc), request_id=_request_id(item))
        return []

    def _drain(self, limit: int) -> list[Any]:
        items: list[Any] = []
        while len(items) < limit:
            try:
                items.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return items

    async def _write(self, items: list[Any]) -> None:
        now = datetime.fromtimestamp(self.clock(), UTC)
        batch = await build_batch(items, self.settings, self.catalog, now)
        if batch.empty():
            return
        if batch.records or batch.usage:
            head = await self.audit.append(batch.records, batch.usage.values())
            if self.metrics is not None:
                self.metrics.audit_written.inc(len(batch.records))
            if batch.records:
                log.debug("audit_appended", records=len(batch.records), head_seq=head)
        if batch.readers:
            await self.audit.remember_readers(batch.readers)
        if self.metrics is not None:
            self.metrics.audit_queue.set(self.queue.qsize())


def _request_id(item: Any) -> str | None:
    return getattr(item, "request_id", None)
