"""The monitoring files GrantGate ships (Grafana dashboard, Prometheus rules) read as data, and traffic that
makes a gateway export every series they use. Shared by the PromQL checks and the real-Prometheus test."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from support.observed import api, api_token, eventually
from support.world import BUCKET, ROOT, World

DASHBOARD = ROOT / "deploy" / "grafana" / "grantgate.json"
RULES = ROOT / "deploy" / "prometheus" / "grantgate-rules.yaml"
_GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*\w+\s*\)\s*$")


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows' nested panels included."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    board = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in panels(board["panels"]) for t in p.get("targets", []) if t.get("expr")]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = _LABEL_VALUES.match(query)
        assert match, f"variable {variable['name']}: unexpected query {query!r}"
        found.append(match["selector"])
    return found


def as_promql(grafana_expr: str) -> str:
    """Grafana's variables replaced by values Prometheus itself would accept."""
    return _GRAFANA_VARIABLE.sub(".*", _GRAFANA_RANGES.sub("5m", grafana_expr))


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def traffic(world: World) -> None:
    tag = secrets.token_hex(4)
    who = world.person(f"mon-{tag}", groups=("ml",))
    world.upstream().put_object(Bucket=BUCKET, Key=f"datasets/{tag}/x", Body=b"x" * 100)
    world.grant(who, f"s3://{BUCKET}/datasets/{tag}/", "read,write")
    s3 = world.client(who)

    def first_read() -> bytes | None:
        # world.sync() waits for worker 0; with several workers the others follow within a refresh.
        try:
            return s3.get_object(Bucket=BUCKET, Key=f"datasets/{tag}/x")["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "AccessDenied":
                raise
            return None

    eventually(first_read, timeout=10, what="every worker to honour the new grant")
    s3.put_object(Bucket=BUCKET, Key=f"datasets/{tag}/y", Body=b"y")
    with pytest.raises(ClientError):
        s3.get_object(Bucket=BUCKET, Key=f"nowhere/{tag}")
    body = {"resource": f"s3://{BUCKET}/models/{tag}/", "actions": ["read"]}
    status, _ = api(world, "POST", "/requests", api_token(world, who), body)
    assert status == 201
