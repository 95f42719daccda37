"""Anchors: the chain's head, logged now and then, so a rewrite of the stored trail shows against the logs."""

from __future__ import annotations

import asyncio

import structlog

from proxy.audit.records import Anchor
from proxy.audit.store import AuditStore

log = structlog.get_logger("grantgate.observe")


async def publish_anchors(audit: AuditStore, interval: float) -> None:
    """Log the chain's head every `interval` seconds when it moved: see `[audit] anchor_interval_seconds`."""
    published = 0
    while True:
        await asyncio.sleep(interval)
        try:
            seq, digest = await audit.head()
        except Exception as exc:
            log.warning("audit_anchor_failed", error=repr(exc))
            continue
        if seq > published:
            log.info("audit_anchor", seq=seq, hash=digest, anchor=str(Anchor(seq, digest)))
            published = seq
