"""The whole_model rule across replicas: worker 0 of each gateway flushes the shard ranges read to the
store every `FLUSH_SECONDS` (never a store write per request), sums each reader's pull from every
replica's rows, and raises an alert only if it wins the claim on it, so a pull fires once in the fleet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from proxy.observe.anomalies import MAX_SUBJECTS, Finding, WholeModel, with_justifications
from proxy.observe.events import AnomalyAlert
from proxy.store.model_reads import ModelReads

log = structlog.get_logger("grantgate.models")

FLUSH_SECONDS = 0.5
PRUNE_SECONDS = 60.0


class ModelPulls:
    def __init__(
        self,
        rule: WholeModel,
        reads: ModelReads,
        raise_alert: Callable[[Finding], AnomalyAlert],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`raise_alert`: emits the finding's alert and carries out its response (AnomalyWatch.raise_)."""
        self.rule, self.reads, self.raise_alert, self.clock = rule, reads, raise_alert, clock
        self._pruned = 0.0
        # Subjects this gateway saw over the line but another raised (or it did earlier): said once each.
        self._raised: set[str] = set()

    async def run(self, interval: float = FLUSH_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as exc:  # the ranges taken are lost; later reads are still counted
                log.warning("model_reads_flush_failed", error=repr(exc) or type(exc).__name__)

    async def flush(self) -> list[AnomalyAlert]:
        """Write what was read since the last flush, then judge each of those readers; the alerts raised."""
        batch = self.rule.take()
        at = self.clock()
        now = datetime.fromtimestamp(at, UTC)
        since = now - timedelta(seconds=self.rule.window)
        if at - self._pruned >= PRUNE_SECONDS:
            await self.reads.prune(since)
            self._pruned = at
        if not batch:
            return []
        await self.reads.record(batch, now)
        raised = []
        for principal in sorted({r.principal for r in batch}):
            flushed = {r.model for r in batch if r.principal == principal}
            reads = await self.reads.read_since(principal, since)
            for finding in self.rule.judge(principal, reads, flushed, at):
                if not await self.reads.claim(self.rule.kind, finding.subject, now, since):
                    self._already_raised(finding)
                    continue
                self._raised.add(finding.subject)
                said = await self.reads.justifications(finding.alert.details["grant_ids"])
                alert = with_justifications(finding.alert, said)
                raised.append(self.raise_alert(Finding(finding.subject, alert, finding.suspends)))
        return raised

    def _already_raised(self, finding: Finding) -> None:
        """Another replica, or an earlier flush, raised this within the window."""
        if finding.subject in self._raised:
            return
        if len(self._raised) >= MAX_SUBJECTS:
            self._raised.clear()
        self._raised.add(finding.subject)
        log.info(
            "anomaly_already_raised",
            kind=finding.alert.kind,
            principal=finding.alert.principal,
            model=finding.alert.details.get("model"),
        )
