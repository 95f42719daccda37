"""The alert rules and the dashboard in a real Prometheus: `promtool check rules`, the rules' unit tests
(`promtool test rules`), and a Prometheus server scraping a live gateway, asked every dashboard query.

promtool and prometheus come from Debian's `prometheus` package (.ci/run installs it).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.monitoring import RULES, as_promql, dashboard_queries, rules, traffic
from support.observed import eventually, observed_world
from support.tools import require
from support.world import BUCKET, ROOT, World, free_port, wait_http

RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "grantgate-rules.test.yaml"
CHART_RULES = ROOT / "deploy" / "helm" / "grantgate" / "files" / "prometheus-rules.yaml"
HOW = "apt-get install prometheus (.ci/run does)"
SCRAPE_SECONDS = 1


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool", HOW), *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


# --- the rule files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RULES, CHART_RULES], ids=["deploy", "chart"])
def test_promtool_accepts_the_rules(path: Path) -> None:
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet() -> None:
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts - fires == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown staying quiet"


def test_the_rules_unit_tests_pass_in_promtool() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_expectation_fails_the_rules_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: the same file, with one quiet case turned into a firing one."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    case = tests["tests"][0]["alert_rule_test"][0]
    assert case["exp_alerts"] == []
    case["exp_alerts"] = [{"exp_labels": {"severity": "critical", "job": "grantgate"}}]
    tests["rule_files"] = [str(RULES)]
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(yaml.safe_dump(tests))
    done = promtool("test", "rules", str(broken))
    assert done.returncode != 0 and case["alertname"] in done.stdout + done.stderr


# --- a real Prometheus over a live gateway ------------------------------------------------------------


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **query: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}?{urllib.parse.urlencode(query)}", timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return list(data["result"])


@contextlib.contextmanager
def prometheus_scraping(directory: Path, target: str) -> Iterator[Prometheus]:
    """A Prometheus server with GrantGate's rules, scraping `target` (host:port) every second."""
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "rule_files": [str(RULES)],
        # The default /metrics, no credentials: what the chart's ServiceMonitor scrapes out of the box.
        "scrape_configs": [{"job_name": "grantgate", "static_configs": [{"targets": [target]}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            require("prometheus", HOW),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30)
        yield Prometheus(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def more_traffic(world: World) -> None:
    """Traffic on top of the shared mix: enough requests through both workers for every rate to move."""
    tag = secrets.token_hex(4)
    who = world.person(f"prom-{tag}", groups=("ml",))
    world.grant(who, f"s3://{BUCKET}/datasets/{tag}/", "read,write")
    s3 = world.client(who)
    for i in range(20):
        # Worker 1 may see the grant a moment after worker 0 (which sync() waits for): retry once.
        with contextlib.suppress(Exception):
            s3.put_object(Bucket=BUCKET, Key=f"datasets/{tag}/{i}", Body=b"z" * 1000)
        with contextlib.suppress(Exception):
            s3.get_object(Bucket=BUCKET, Key=f"datasets/{tag}/{i}")["Body"].read()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    require("prometheus", HOW)
    directory = tmp_path_factory.mktemp("prometheus")
    with observed_world(directory, workers=2) as world:
        target = urllib.parse.urlsplit(world.http.control_url).netloc
        with prometheus_scraping(directory, target) as prom:
            traffic(world)
            more_traffic(world)
            # A scrape that saw the traffic, then one more: every rate has two samples of each series.
            scrapes = 'count_over_time(up{job="grantgate"}[5m])'
            eventually(
                lambda: prom.query('sum(grantgate_s3_requests_total{job="grantgate"}) > 40'),
                timeout=30,
                what="Prometheus to scrape the traffic",
            )
            seen = float(prom.query(scrapes)[0]["value"][1])
            eventually(
                lambda: float(prom.query(scrapes)[0]["value"][1]) > seen, timeout=30, what="one more scrape"
            )
            yield prom


def test_prometheus_scrapes_the_gateway_with_several_workers(prometheus: Prometheus) -> None:
    (target,) = prometheus.get("/api/v1/targets")["activeTargets"]
    assert target["health"] == "up", target
    assert prometheus.query('up{job="grantgate"} == 1')


def test_prometheus_evaluates_every_rule_without_error(prometheus: Prometheus) -> None:
    groups = eventually(
        lambda: (
            [g for g in prometheus.get("/api/v1/rules")["groups"] if g["lastEvaluation"][:4] != "0001"]
            or None
        ),
        what="a rule evaluation",
    )
    evaluated = [rule for group in groups for rule in group["rules"]]
    assert len(evaluated) == len(rules())
    assert [r["name"] for r in evaluated if r["health"] != "ok"] == []


@pytest.mark.parametrize("expr", dashboard_queries())
def test_every_dashboard_query_returns_series_after_traffic(prometheus: Prometheus, expr: str) -> None:
    assert prometheus.query(as_promql(expr)), f"no series for {expr}"
