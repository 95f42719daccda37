"""What the anomaly detectors cost per 4 KiB GET, in-process: CPU time, detectors on vs off.

    python -m bench.detectors [--rounds 15] [--events 20000]

Per request the data plane does one thing for them: the decoy lookup (`DecoySet.touched`, on every
request, in the request's path). Everything else happens after the answer, in worker 0's observer
(`AnomalyWatch`): every rule's `observe`, the whole_model rule's range bookkeeping included, and, every
second and off the request path, the flush of the ranges read to the store (`ModelPulls.flush`, timed
here on a SQLite store as one batch per round, then divided by the requests of a second at the rate
given).

The events are what a 4 KiB GET of a model shard makes (allowed, under a grant, a decoy configured on the
same bucket, the shard in the model catalogue), with the default `[anomalies]` settings. "off" is
`[anomalies] enabled = false`: no watch is subscribed at all, so its cost is zero; the figure given for
it is the same loop feeding a `Detectors` with no rules (the call's own overhead). Timed with
`time.process_time_ns` (CPU of this process, so other load on the machine does not count), on and off
alternating within each round; medians and the spread (min-max) of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from proxy.access.decoys import DecoySet
from proxy.access.grants import Action, Scope, Target
from proxy.audit.resources import ResourceCatalog
from proxy.observe.anomalies import Detectors, Finding
from proxy.observe.events import AnomalyAlert, EventBus, RequestEvent, Verdict
from proxy.observe.model_pulls import FLUSH_SECONDS, ModelPulls
from proxy.observe.models import KnownModels, ModelCatalog, find_models
from proxy.observe.observers import AnomalyWatch
from proxy.observe.settings import AnomalySettings
from proxy.store.model_reads import ModelReads
from proxy.store.sql import SqlStore
from proxy.store.suspensions import GrantSuspensions

BUCKET = "bench-bucket"
MODEL = "models/llama/"
SHARDS = [f"{MODEL}model-{i:05d}-of-00064.safetensors" for i in range(1, 65)]
SHARD_SIZE = 512 * 1024 * 1024
SMALL = 4096


def events(count: int, principals: int) -> list[RequestEvent]:
    """4 KiB GETs over the model's shards by `principals` readers, as a busy gateway would see them."""
    return [
        RequestEvent(
            request_id=f"r{i}",
            started_at=0.0,
            source_ip="10.0.0.5",
            user_agent="wrk",
            method="GET",
            principal=f"reader-{i % principals}",
            groups=("ml",),
            access_key_id="GGKBENCH",
            operation="GetObject",
            action="read",
            bucket=BUCKET,
            key=SHARDS[i % len(SHARDS)],
            decision=Verdict.ALLOW,
            grant_ids=(f"g_{i % principals}",),
            status=200,
            bytes_out=SMALL,
            range_start=(i // len(SHARDS)) * SMALL,
        )
        for i in range(count)
    ]


def detectors(enabled: bool) -> Detectors:
    settings = AnomalySettings.model_validate({"enabled": enabled})
    catalog = ResourceCatalog.from_patterns({"models": [f"s3://{BUCKET}/models/"]})
    models = KnownModels(ModelCatalog.of(find_models(BUCKET, [(k, SHARD_SIZE) for k in SHARDS])))
    return Detectors(settings, catalog, known_readers=[("models", "ml")], models=models)


def cpu_ns_per_call(work: Callable[[], None], calls: int) -> float:
    began = time.process_time_ns()
    work()
    return (time.process_time_ns() - began) / calls


async def measure(rounds: int, count: int, rate: float, principals: int) -> dict[str, list[float]]:
    batch = events(count, principals)
    decoys = DecoySet([(BUCKET, "models/llama-3-70b-instruct/"), (BUCKET, "models/bait.safetensors")])
    targets = [(Target(Action.READ, BUCKET, e.key or "", Scope.OBJECT),) for e in batch]
    results: dict[str, list[float]] = {
        "decoy lookup": [],
        "observer on": [],
        "observer off": [],
        "flush": [],
        "flush ms": [],
    }
    with tempfile.TemporaryDirectory(prefix="grantgate-detectors-") as tmp:
        store = await SqlStore.open(f"sqlite:///{Path(tmp) / 'g.db'}", upgrade=True)
        try:
            # One gateway's observer, on and off, kept across the rounds (its memory grows as a
            # running gateway's would); its flush, once per round, carries the round's reads.
            watches = {
                name: AnomalyWatch(detectors(enabled), EventBus(), GrantSuspensions(store), None, None)
                for name, enabled in (("observer on", True), ("observer off", False))
            }
            rule = watches["observer on"].detectors.whole_model
            assert rule is not None

            def raised(finding: Finding) -> AnomalyAlert:
                return finding.alert

            pulls = ModelPulls(rule, ModelReads(store), raised)
            for _ in range(rounds):
                for name, watch in watches.items():
                    results[name].append(cpu_ns_per_call(lambda w=watch: [w(e) for e in batch], count) / 1e3)
                results["decoy lookup"].append(
                    cpu_ns_per_call(lambda: [decoys.touched(t) for t in targets], count) / 1e3
                )
                began = time.process_time_ns()
                await pulls.flush()
                per_flush_us = (time.process_time_ns() - began) / 1e3
                # One flush carries the requests of FLUSH_SECONDS at `rate` (at most this batch).
                results["flush"].append(per_flush_us / min(count, rate * FLUSH_SECONDS))
                results["flush ms"].append(per_flush_us / 1e3)
        finally:
            await store.close()
    return results


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.detectors", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="requests/s assumed for the flush share")
    parser.add_argument("--principals", type=int, default=16, help="distinct readers in each flush")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.rounds, args.events, args.rate, args.principals))
    print(
        f"CPU us per 4 KiB GET, median (min-max) of {args.rounds} rounds of {args.events} events, "
        f"{args.principals} readers, a flush per {args.rate * FLUSH_SECONDS:g} requests"
    )
    for name, values in results.items():
        unit = "  (CPU ms per flush: one a second, only while shards are read)" if "ms" in name else ""
        print(f"  {name:<14} {_fmt(values)}{unit}")
    on = [a - b for a, b in zip(results["observer on"], results["observer off"], strict=True)]
    total = [a + b + c for a, b, c in zip(on, results["decoy lookup"], results["flush"], strict=True)]
    print(f"  {'rules (on-off)':<14} {_fmt(on)}")
    print(f"  {'all detectors':<14} {_fmt(total)}  (decoy lookup + rules + flush share)")


if __name__ == "__main__":
    main()
