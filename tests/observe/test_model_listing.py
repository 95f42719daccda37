"""Worker 0's listing of the resources, against moto's S3 over HTTP: bounded by pages and keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import boto3
import pytest
from support.world import free_port

from proxy.config import UpstreamSettings
from proxy.observe.model_listing import catalogue
from proxy.observe.settings import WholeModelRule
from proxy.s3.listing import list_prefix
from proxy.s3.upstream import Upstream, new_pool

BUCKET = "weights"
KEYS = [f"models/m/model-{i:05d}-of-00025.safetensors" for i in range(25)]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    s3.create_bucket(Bucket=BUCKET)
    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 7)
    s3.put_object(Bucket=BUCKET, Key="data/train.csv", Body=b"y")
    try:
        yield url
    finally:
        moto.stop()


@pytest.fixture
async def upstream(endpoint: str) -> AsyncIterator[Upstream]:
    settings = UpstreamSettings(endpoint_url=endpoint, access_key_id="a", secret_access_key="b")
    pool = new_pool(settings)
    try:
        yield Upstream(settings, pool)
    finally:
        await pool.close()


async def test_the_listing_follows_pages_up_to_its_bounds(upstream: Upstream) -> None:
    every = await list_prefix(upstream, BUCKET, "models/", max_pages=10, max_keys=1000, page_size=10)
    assert sorted(k for k, _ in every.objects) == KEYS and {s for _, s in every.objects} == {7}
    assert every.complete and every.size == 7 * len(KEYS)
    two_pages = await list_prefix(upstream, BUCKET, "models/", max_pages=2, max_keys=1000, page_size=10)
    assert len(two_pages.objects) == 20 and two_pages.pages == 2 and not two_pages.complete
    few_keys = await list_prefix(upstream, BUCKET, "models/", max_pages=10, max_keys=15, page_size=10)
    assert len(few_keys.objects) == 15 and not few_keys.complete


async def test_the_catalogue_of_the_resources_holds_their_models(upstream: Upstream) -> None:
    found = await catalogue(upstream, [(BUCKET, "models/"), (BUCKET, "data/")], WholeModelRule())
    model = found.model_of(BUCKET, KEYS[3])
    assert model is not None and model.name == f"s3://{BUCKET}/models/m/" and model.size == 25 * 7
    assert found.model_of(BUCKET, "data/train.csv") is None
