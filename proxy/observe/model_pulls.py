"""The whole_model rule across replicas: worker 0 of each gateway flushes the shard ranges read to the
store every `FLUSH_SECONDS` (never a store write per request), sums each reader's pull from every
replica's rows, and raises an alert only if it wins the claim on it, so a pull fires once in the fleet.

Each gateway keeps a tally per reader, built once from the window's rows and then topped up with the
rows flushed since (an overlapping slice, `LATE_SECONDS`, for rows committed late: adding a row twice
changes nothing), so a flush reads what is new, not the whole window again. A tally is rebuilt every
quarter window, so what it sums spans at most 1.25 windows.

When the store cannot be written (a short database outage), the ranges taken are kept, up to
`MAX_KEPT_RANGES` (the oldest go first), and flushed with the next batch: a pull during the outage is
still counted, as read at the moment it reaches the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from proxy.observe.anomalies import MAX_SUBJECTS, Finding, Lru, WholeModel, with_justifications
from proxy.observe.events import AnomalyAlert
from proxy.observe.models import ShardRead, Tally
from proxy.store.model_reads import ModelReads

log = structlog.get_logger("grantgate.models")

FLUSH_SECONDS = 1.0
PRUNE_SECONDS = 60.0
LATE_SECONDS = 2.0
REBUILDS_PER_WINDOW = 4
# Ranges kept while the store is unreachable: about 10 MB at most. A pull merges into few ranges per
# shard (take() merges them), so this holds many minutes of an outage's pulls.
MAX_KEPT_RANGES = 100_000


def _moment(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


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
        self._tallies: Lru = Lru()  # principal -> Tally
        # Subjects this gateway saw over the line but another raised (or it did earlier): said once each.
        self._raised: set[str] = set()
        # Ranges a failed flush could not write, oldest first: written with the next batch.
        self._kept: list[ShardRead] = []
        self.max_kept = MAX_KEPT_RANGES
        self.dropped = 0  # ranges let go because more were kept than max_kept

    async def run(self, interval: float = FLUSH_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as exc:  # the ranges taken are kept for the next flush (bounded)
                log.warning(
                    "model_reads_flush_failed",
                    error=repr(exc) or type(exc).__name__,
                    kept=len(self._kept),
                    dropped=self.dropped,
                )

    async def flush(self) -> list[AnomalyAlert]:
        """Write what was read since the last flush, then judge each of those readers; the alerts raised."""
        batch, self._kept = [*self._kept, *self.rule.take()], []
        at = self.clock()
        now, window_start = _moment(at), _moment(at - self.rule.window)
        try:
            if at - self._pruned >= PRUNE_SECONDS:
                await self.reads.prune(_moment(at - self.rule.window * (1 + 1 / REBUILDS_PER_WINDOW)))
                self._pruned = at
            if batch:
                await self.reads.record(batch, now)
        except Exception:
            self._keep(batch)
            raise
        if not batch:
            return []
        raised = []
        tallies = await self._tallies_of(sorted({r.principal for r in batch}), at)
        for principal, tally in tallies.items():
            flushed = {r.model for r in batch if r.principal == principal}
            for finding in self.rule.judge(principal, tally, flushed, at):
                if not await self.reads.claim(self.rule.kind, finding.subject, now, window_start):
                    self._already_raised(finding)
                    continue
                self._raised.add(finding.subject)
                said = await self.reads.justifications(finding.alert.details["grant_ids"])
                alert = with_justifications(finding.alert, said)
                raised.append(self.raise_alert(Finding(finding.subject, alert, finding.suspends)))
        return raised

    def _keep(self, batch: list[ShardRead]) -> None:
        """Hold what could not be written for the next flush, the newest `max_kept` ranges of it."""
        over = len(batch) - self.max_kept
        if over > 0:
            self.dropped += over
            batch = batch[over:]
        self._kept = batch

    async def _tallies_of(self, principals: list[str], at: float) -> dict[str, Tally]:
        """Each principal's reads in the window, topped up from the store in one query."""
        tallies: dict[str, Tally] = {}
        since: dict[str, datetime] = {}
        for principal in principals:
            tally: Tally | None = self._tallies.get(principal)
            if tally is None or at - tally.started > self.rule.window / REBUILDS_PER_WINDOW:
                tally = Tally(at)
                since[principal] = _moment(at - self.rule.window)
            else:
                since[principal] = _moment(tally.seen_until - LATE_SECONDS)
            self._tallies.touch(principal, tally)
            self._tallies[principal] = tallies[principal] = tally
        for read in await self.reads.read_since(since):
            tallies[read.principal].add((read,))
        return tallies

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
