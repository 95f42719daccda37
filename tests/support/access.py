"""Steps shared by the access-request journeys: a read the gateway denies (and its request link), a read."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from support.world import BUCKET, Identity, World


def denied_link(world: World, who: Identity, key: str) -> str:
    """Read as `who`, expect AccessDenied, and return the access-request link from the message."""
    with pytest.raises(ClientError) as exc:
        world.client(who).get_object(Bucket=BUCKET, Key=key)
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    match = re.search(r"Request access at (\S+)", exc.value.response["Error"]["Message"])
    assert match, exc.value.response["Error"]["Message"]
    return match.group(1)


def read(world: World, who: Identity, key: str) -> bytes:
    return world.client(who).get_object(Bucket=BUCKET, Key=key)["Body"].read()
