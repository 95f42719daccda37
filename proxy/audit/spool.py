"""The audit spool: batches the store cannot take are kept on local disk and written once it is back.

`SpoolingAudit` is the AuditSink the audit writer appends through, in front of an AuditStore. A batch
that fails to reach the store is written to the spool directory as one fsync'd JSON file, and so is
every later batch until the spool is empty again (the trail keeps its order). A drain task replays
the files oldest first. A batch whose commit may have landed even though the client saw an error (the
connection died at COMMIT, or the process died before deleting the file) is looked for in the trail
first, so none is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

import structlog
from sqlalchemy.exc import SQLAlchemyError

from proxy.audit.records import AuditRecord, Usage, iso, parse_iso
from proxy.audit.sink import Reader
from proxy.audit.store import AuditStore

log = structlog.get_logger("grantgate.audit")

RETRY_MAX_SECONDS = 5.0
APPEND_TIMEOUT_SECONDS = 10.0
# What a store that cannot be reached raises (a refused or dropped connection, a hung one).
UNREACHABLE = (SQLAlchemyError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """One batch as it waits on disk; `after_seq` is a chain head known to precede its append."""

    records: tuple[AuditRecord, ...] = ()
    usage: tuple[Usage, ...] = ()
    readers: tuple[Reader, ...] = ()
    after_seq: int = 0


# --- (de)serialization (pure) ----------------------------------------------------------------------------


def encode_batch(batch: SpooledBatch) -> str:
    return json.dumps(
        {
            "records": [{**asdict(r), "at": iso(r.at)} for r in batch.records],
            "usage": [
                {
                    **asdict(u),
                    "first_used_at": _iso_or_none(u.first_used_at),
                    "last_used_at": _iso_or_none(u.last_used_at),
                }
                for u in batch.usage
            ],
            "readers": [[res, group, principal, iso(at)] for res, group, principal, at in batch.readers],
            "after_seq": batch.after_seq,
        },
        sort_keys=True,
    )


def decode_batch(text: str) -> SpooledBatch:
    data = json.loads(text)
    record_fields = {f.name for f in fields(AuditRecord)}
    records = tuple(
        AuditRecord(**{**{k: v for k, v in r.items() if k in record_fields}, "at": parse_iso(r["at"])})
        for r in data["records"]
    )
    usage = tuple(
        Usage(
            **{
                **u,
                "first_used_at": _parse_or_none(u["first_used_at"]),
                "last_used_at": _parse_or_none(u["last_used_at"]),
            }
        )
        for u in data["usage"]
    )
    readers = tuple((res, group, principal, parse_iso(at)) for res, group, principal, at in data["readers"])
    return SpooledBatch(records, usage, readers, int(data["after_seq"]))


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def _parse_or_none(text: str | None) -> datetime | None:
    return None if text is None else parse_iso(text)


# --- the spool directory ----------------------------------------------------------------------------------


class SpoolDir:
    """Batches as files named so that sorting them gives the order they were spooled in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        # One process per directory: two drainers of one spool could write a batch twice.
        self._lock = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise OSError(f"audit spool {path} is in use by another process") from None

    def close(self) -> None:
        os.close(self._lock)  # releases the lock

    def add(self, batch: SpooledBatch) -> Path:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        final = self.path / name
        tmp = self.path / (name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(encode_batch(batch))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)  # whole or absent, never half a batch
        _fsync_dir(self.path)
        return final

    def pending(self) -> list[Path]:
        return sorted(self.path.glob("*.json"))

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _fsync_dir(self.path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the store wrapper -------------------------------------------------------------------------------------


class SpoolingAudit:
    """An AuditSink over `trail` whose appends never fail for an unreachable store: those are spooled."""

    def __init__(self, trail: AuditStore, spool: SpoolDir) -> None:
        self.trail = trail
        self.spool = spool
        self.spooled = 0  # batches written to disk since start, for tests and logs
        self.replayed = 0
        self._known_head = 0
        self._lock = asyncio.Lock()
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Learn the chain head (it bounds the duplicate search) and replay what an earlier run left."""
        with contextlib.suppress(*UNREACHABLE):
            self._known_head, _hash = await self.trail.head()
        if self.spool.pending():
            self._start_drain()

    async def close(self) -> None:
        """Stop draining; what is left stays on disk for the next start."""
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None
        self.spool.close()

    @property
    def backlog(self) -> int:
        return len(self.spool.pending())

    async def append(self, records: list[AuditRecord], usage: Iterable[Usage] = ()) -> int:
        usage = tuple(usage)
        async with self._lock:
            if not self.spool.pending():
                after = self._known_head
                try:
                    # Bounded: a store that hangs rather than refuses must not stall the writer
                    # until its queue overflows. If the append lands after all, replay finds it.
                    self._known_head = await asyncio.wait_for(
                        self.trail.append(records, usage), APPEND_TIMEOUT_SECONDS
                    )
                    return self._known_head
                except UNREACHABLE as exc:
                    log.error("audit_store_unreachable", error=repr(exc), spooling=len(records))
                self._spool(SpooledBatch(tuple(records), usage, (), after))
            else:  # behind earlier spooled batches, to keep the trail in order
                self._spool(SpooledBatch(tuple(records), usage, (), self._known_head))
        return self._known_head

    async def remember_readers(self, items: Iterable[Reader]) -> None:
        items = tuple(items)
        try:
            await self.trail.remember_readers(items)
        except UNREACHABLE:
            async with self._lock:
                self._spool(SpooledBatch(readers=items))  # idempotent on replay: known pairs are kept

    def _spool(self, batch: SpooledBatch) -> None:
        self.spool.add(batch)
        self.spooled += 1
        self._start_drain()

    def _start_drain(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._run_drain(), name="audit-spool")

    async def _run_drain(self) -> None:
        delay = 0.25
        while True:
            try:
                if await self.drain():
                    return
                delay = 0.25
            except Exception as exc:  # whatever it is, the spool stays on disk and is retried
                log.warning("audit_spool_retry", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def drain(self) -> bool:
        """Write spooled batches, oldest first, until none is left (True) or the store fails (raises)."""
        async with self._lock:
            for path in self.spool.pending():
                batch = decode_batch(path.read_text(encoding="utf-8"))
                await asyncio.wait_for(self._replay(batch), APPEND_TIMEOUT_SECONDS)
                self.spool.remove(path)
                self.replayed += 1
            log.info("audit_spool_drained", replayed=self.replayed)
            return True

    async def _replay(self, batch: SpooledBatch) -> None:
        # Every record carries its own request id or event fields, so its exact body identifies it; the
        # batch was appended whole or not at all, after `after_seq`.
        if batch.records and await self.trail.holds(batch.records[0].body(), after_seq=batch.after_seq):
            log.info("audit_spool_duplicate_skipped", after_seq=batch.after_seq)
            return
        if batch.records or batch.usage:
            self._known_head = await self.trail.append(list(batch.records), batch.usage)
        if batch.readers:
            await self.trail.remember_readers(batch.readers)


async def start_spooling(trail: AuditStore, configured: Path) -> SpoolingAudit | None:
    """A started SpoolingAudit, or None (logged) if no directory can be used: the audit writer then
    only retries in memory. `configured` is `Settings.audit_spool_dir()`: one per S3 port, so replicas
    sharing a config directory on one host never share a spool, and a restarted replica finds its own. A
    configured directory that cannot be written (a read-only config mount) falls back to one under the
    temp dir."""
    leaf = configured.name
    for path in (configured, Path(tempfile.gettempdir()) / "grantgate-audit-spool" / leaf):
        try:
            spool = SpoolDir(path)
        except OSError as exc:
            log.error("audit_spool_unavailable", path=str(path), error=repr(exc))
            continue
        if path != configured:
            log.warning("audit_spool_fallback", path=str(path), configured=str(configured))
        audit = SpoolingAudit(trail, spool)
        await audit.start()
        return audit
    return None
