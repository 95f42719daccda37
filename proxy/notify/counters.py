"""Delivery counters for notifiers: plain counts, mirrored to a Prometheus registry when there is one."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter


class Outcomes:
    """Counts outcomes (delivered, retried, failed, dropped...) per label, in memory and in Prometheus."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry | None = None) -> None:
        self.counts: Tally[tuple[str, str]] = Tally()
        self._metric = (
            Counter(name, documentation, ["target", "outcome"], registry=registry)
            if registry is not None
            else None
        )

    def inc(self, target: str, outcome: str) -> None:
        self.counts[(target, outcome)] += 1
        if self._metric is not None:
            self._metric.labels(target=target, outcome=outcome).inc()

    def total(self, outcome: str) -> int:
        return sum(n for (_target, seen), n in self.counts.items() if seen == outcome)
