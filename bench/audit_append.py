"""CPU per record of appending to the durable audit trail: `python -m bench.audit_append`.

Appends realistic S3 request records (built from RequestEvents the way the gateway's audit writer builds
them) through `AuditStore.append`, in batches of the writer's default size, and prints microseconds of
this process's CPU (user + system, every thread: aiosqlite runs SQLite in a thread of its own) per
record. The body rendering the append does before its transaction is also timed on its own, so the rest
(chaining, inserting, committing) can be told from it.

SQLite always (a temporary file). PostgreSQL too when a URL is given with `--postgres` or
GRANTGATE_BENCH_POSTGRES: use an empty, throw-away database, as every round adds its rows to the trail
(the run refuses a database whose trail is not empty). Only the gateway's side is measured there; the
server's own CPU is another process's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from proxy.audit.records import AuditRecord, bodies_of, request_record
from proxy.audit.resources import ResourceCatalog
from proxy.audit.store import AuditStore
from proxy.observe.events import RequestEvent
from proxy.observe.settings import AuditSettings
from proxy.store.sql import SqlStore

POSTGRES_ENV = "GRANTGATE_BENCH_POSTGRES"
CATALOG = ResourceCatalog.from_patterns(
    {"models": ["s3://archive/models/"], "datasets": ["s3://archive/datasets/"]}
)


def request_records(count: int) -> list[AuditRecord]:
    """Records of allowed and denied GETs and PUTs, filled in as the listener fills its events."""
    start = time.time()
    records = []
    for i in range(count):
        allowed = i % 10 != 0
        write = i % 4 == 0
        event = RequestEvent(
            request_id=secrets.token_hex(8).upper(),
            started_at=start + i * 0.001,
            source_ip="10.1.2.3",
            user_agent="aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.debian.12 botocore/2.4.5",
            method="PUT" if write else "GET",
            principal=f"user{i % 20}@example.com",
            groups=("ml", "staff"),
            access_key_id="GGAK" + secrets.token_hex(8).upper(),
            operation="PutObject" if write else "GetObject",
            action="write" if write else "read",
            bucket="archive",
            key=f"{'models' if i % 3 else 'datasets'}/run-{i % 50}/part-{i:06d}.bin",
            decision="allow" if allowed else "deny",
            reason=None if allowed else "AccessDenied",
            grant_ids=(f"g_{i % 20:016x}",) if allowed else (),
            status=200 if allowed else 403,
            bytes_in=4096 if write and allowed else 0,
            bytes_out=0 if write or not allowed else 4096,
            duration_ms=1.25 + i % 7,
            ttfb_ms=0.8,
            outcome="ok" if allowed else "denied",
            upstream_status=200 if allowed else None,
            deny_reason=None if allowed else "no_grant",
        )
        records.append(request_record(event, CATALOG))
    return records


def batches(records: list[AuditRecord], size: int) -> list[list[AuditRecord]]:
    return [records[start : start + size] for start in range(0, len(records), size)]


async def cpu_per_record(
    work: Callable[[list[AuditRecord]], Awaitable[object]], parts: list[list[AuditRecord]]
) -> float:
    """Microseconds of process CPU per record for `work` over every batch."""
    started = time.process_time()
    for part in parts:
        await work(part)
    return (time.process_time() - started) / sum(map(len, parts)) * 1e6


async def measure(url: str, count: int, batch: int, rounds: int) -> tuple[list[float], list[float]]:
    """Per round: CPU per record of the whole append, and of rendering the bodies alone."""
    store = await SqlStore.open(url, upgrade=True)
    try:
        audit = AuditStore(store)
        if (await audit.head())[0] != 0:
            raise SystemExit(f"the audit trail of {store.dialect} is not empty: give a throw-away database")
        appends, renders = [], []
        for _ in range(rounds):
            parts = batches(request_records(count), batch)
            # Out of the collector's walks, as the gateway's startup heap is (app.settle_heap): a gateway
            # holds one batch of records, not a whole run's, and full collections over these would be
            # charged to whichever append triggered them.
            gc.collect()
            gc.freeze()
            try:
                renders.append(await cpu_per_record(bodies_of, parts))
                appends.append(await cpu_per_record(audit.append, parts))
            finally:
                gc.unfreeze()
        report = await audit.verify()
        if not report.ok or report.checked != count * rounds:
            raise SystemExit(f"the trail does not verify after the run: {report.as_dict()}")
        return appends, renders
    finally:
        await store.close()


def show(name: str, appends: list[float], renders: list[float]) -> None:
    rounds = ", ".join(f"{v:.1f}" for v in appends)
    print(
        f"{name:<10} append {statistics.median(appends):6.1f} µs/record (rounds: {rounds}); "
        f"of which rendering bodies {statistics.median(renders):.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_append", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000, help="records appended per round")
    parser.add_argument("--batch", type=int, default=AuditSettings().batch_size, help="records per append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get(POSTGRES_ENV), help=f"URL (or {POSTGRES_ENV})")
    args = parser.parse_args(argv)
    print(f"{args.records} records per round in batches of {args.batch}, median of {args.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="grantgate-bench-") as workdir:
        url = f"sqlite:///{Path(workdir) / 'audit.db'}"
        show("sqlite", *asyncio.run(measure(url, args.records, args.batch, args.rounds)))
    if args.postgres:
        show("postgresql", *asyncio.run(measure(args.postgres, args.records, args.batch, args.rounds)))


if __name__ == "__main__":
    main()
