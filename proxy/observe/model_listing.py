"""Worker 0's periodic, bounded listing of the policy's resources, from which the models are learned.

Through the gateway's own upstream client (its credentials, its pool); pages and keys are bounded by
`[anomalies.whole_model]`, and the catalogue found is kept (cached) until the next listing succeeds, so a
bucket that is briefly unreachable does not make the rule forget every model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from proxy.observe.models import KnownModels, ModelCatalog, find_models
from proxy.observe.settings import WholeModelRule
from proxy.s3.listing import list_prefix
from proxy.s3.upstream import Upstream

log = structlog.get_logger("grantgate.models")

TIMEOUT_SECONDS = 30.0


async def catalogue(
    upstream: Upstream, places: Iterable[tuple[str, str]], rule: WholeModelRule
) -> ModelCatalog:
    """The models under each (bucket, prefix), the key bound shared by all of them."""
    by_bucket: dict[str, dict[str, int]] = {}
    budget = rule.max_keys
    for bucket, prefix in sorted(set(places)):
        if budget <= 0:
            break
        listing = await list_prefix(upstream, bucket, prefix, max_pages=rule.max_pages, max_keys=budget)
        budget -= len(listing.objects)
        by_bucket.setdefault(bucket, {}).update(listing.objects)
    return ModelCatalog.of(m for bucket, keys in by_bucket.items() for m in find_models(bucket, keys.items()))


async def keep_current(
    upstream: Upstream, places: Iterable[tuple[str, str]], rule: WholeModelRule, known: KnownModels
) -> None:
    """List now and every `refresh_seconds`, replacing the catalogue each time a listing succeeds."""
    places = list(places)
    while True:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                found = await catalogue(upstream, places, rule)
        except Exception as exc:  # keep the last catalogue; the next round tries again
            log.warning("model_listing_failed", error=repr(exc) or type(exc).__name__)
        else:
            if found != known.catalog:
                log.info("models_listed", models=len(found), bytes=found.size)
            known.replace(found)
        await asyncio.sleep(rule.refresh_seconds)
