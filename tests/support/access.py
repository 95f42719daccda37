"""Steps shared by the access-request journeys: a read the gateway denies (and its request link), a read,
a call to the JSON API."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

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


def api(
    world: World, token: str, method: str, path: str, body: dict[str, Any] | None = None, *, base: str = ""
) -> tuple[int, Any]:
    """Call `/api/v1{path}` as the holder of `token` (on `base`, or the world's plain-HTTP gateway)."""
    request = urllib.request.Request(
        f"{base or world.http.control_url}/api/v1{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"].startswith("application/problem+json")
        return exc.code, json.load(exc)
