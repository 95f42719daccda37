"""`grantgate decoys plant`: write each configured decoy into the bucket through the gateway's own
upstream client (same credentials, signing and addressing), and record it in the store."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime

from proxy.access.policy_config import PolicySettings
from proxy.config import Settings
from proxy.decoys.forge import forge
from proxy.s3.upstream import Upstream, UpstreamRequest, new_pool
from proxy.store.decoys import DecoyStore, PlantedDecoy
from proxy.store.sql import SqlStore

DEFAULT_SIZE = 4 * 1024 * 1024
# A decoy prefix gets one shard under it, named as the first of a sharded checkpoint.
PREFIX_SHARD = "model-00001-of-00004.safetensors"


class PlantError(Exception):
    """The bucket refused a decoy."""


def planned(policy: PolicySettings) -> list[tuple[str, str, str]]:
    """(resource, bucket, key) of every object to plant: each decoy key, and one shard per prefix."""
    out = []
    for name, spec in policy.resources.items():
        for bucket, key in spec.decoy_entries():
            out.append((name, bucket, key + PREFIX_SHARD if key.endswith("/") else key))
    return out


async def plant(
    settings: Settings,
    store: SqlStore,
    *,
    actor: str,
    size: int = DEFAULT_SIZE,
    noise: Callable[[int], bytes] = os.urandom,
) -> list[PlantedDecoy]:
    pool = new_pool(settings.upstream)
    upstream = Upstream(settings.upstream, pool)
    record = DecoyStore(store)
    done = []
    try:
        for resource, bucket, key in planned(settings.policy):
            kind, data = forge(key, size, noise)
            digest = hashlib.sha256(data).hexdigest()
            await _put(upstream, bucket, key, data, digest)
            planted = PlantedDecoy(bucket, key, resource, kind, len(data), digest, datetime.now(UTC), actor)
            await record.record(planted)
            done.append(planted)
    finally:
        await pool.close()
    return done


async def _put(upstream: Upstream, bucket: str, key: str, data: bytes, digest: str) -> None:
    headers = {"content-length": str(len(data)), "content-type": "application/octet-stream"}
    response = await upstream.send(UpstreamRequest("PUT", bucket, key, (), headers, data, digest))
    try:
        if response.status != 200:
            detail = (await response.content.read())[:300].decode(errors="replace")
            raise PlantError(f"s3://{bucket}/{key}: the bucket answered {response.status}: {detail}")
    finally:
        response.release()
