"""The Helm chart, linted and rendered by a real Helm, every manifest validated against Kubernetes' schemas.

Helm comes from `make helm` (deploy/tools/install-helm.sh); CI installs it, so there it must be present.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support import tools

from proxy.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "grantgate"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
# The oldest Kubernetes the chart supports (native sidecars) and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
VALUES = {"default": [], "full": ["-f", str(FULL_VALUES)]}
NAMESPACE = "ml-platform"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [tools.helm(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}\n{done.stdout}")
    return done


def render(*values: str) -> list[dict[str, Any]]:
    out = helm("template", "gg", str(CHART), "--namespace", NAMESPACE, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(*VALUES[request.param])


@pytest.mark.parametrize("values", sorted(VALUES))
def test_chart_lints_clean(values: str) -> None:
    done = helm("lint", str(CHART), "--strict", *VALUES[values])
    assert "0 chart(s) failed" in done.stdout


def test_every_rendered_manifest_is_valid_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _name, docs = rendered
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            check_prometheus_operator_resource(doc)
            continue
        for version in KUBERNETES_VERSIONS:
            # strict: unknown fields are errors too, so a misspelt or misplaced key cannot slip through.
            kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 6


def check_prometheus_operator_resource(doc: dict[str, Any]) -> None:
    """CRDs have no schema in kubernetes-validate: check the fields the operator needs."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["metadata"]["name"]
    if doc["kind"] == "ServiceMonitor":
        assert doc["spec"]["selector"]["matchLabels"]
        assert all(e["port"] and e["path"] == "/metrics" for e in doc["spec"]["endpoints"])
    elif doc["kind"] == "PrometheusRule":
        groups = doc["spec"]["groups"]
        assert groups
        for group in groups:
            assert group["name"]
            assert all(("alert" in r) != ("record" in r) and r["expr"] for r in group["rules"])
    else:
        raise AssertionError(f"unexpected operator resource {doc['kind']}")


def test_generated_config_is_accepted_by_the_gateway(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    config = find(docs, "ConfigMap", "gg-grantgate-config")["data"]["config.toml"]
    settings = Settings.model_validate(tomllib.loads(config))
    assert (settings.server.s3_host, settings.server.s3_port) == ("0.0.0.0", 9000)  # noqa: S104
    assert settings.server.control_port == 9001
    assert settings.sts.enabled == (name == "full")


def test_gateway_pods_run_non_root_read_only_with_probes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _name, docs = rendered
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["name"] for p in gateway["ports"]} == {"s3", "control"}
    secret_env = next(e for e in gateway["env"] if e["name"] == "GRANTGATE_SECRET_KEY")
    assert "secretKeyRef" in secret_env["valueFrom"]


def test_default_values_render_a_single_replica_on_sqlite() -> None:
    docs = render()
    assert find(docs, "Deployment")["spec"]["replicas"] == 1
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount"}
    assert not any(d["kind"] in ("Job", "NetworkPolicy", "Ingress", "ServiceMonitor") for d in docs)


def test_sqlite_store_with_several_replicas_is_refused() -> None:
    done = helm("template", "gg", str(CHART), "--set", "replicaCount=3", check=False)
    assert done.returncode != 0
    assert "PostgreSQL" in done.stderr


def test_full_values_use_postgres_with_a_migrating_init_container() -> None:
    docs = render(*VALUES["full"])
    deployment = find(docs, "Deployment")
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    assert init[0]["args"][-2:] == ["db", "upgrade"]
    assert init[0]["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "grantgate-postgres", "key": "url"}
    assert find(docs, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 12
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    account = find(docs, "ServiceAccount", "gg-grantgate")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/grantgate")


def test_sidecar_is_injected_into_the_example_job() -> None:
    docs = render(*VALUES["full"])
    job = find(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["name"] == "grantgate-sidecar"
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: the Job still completes
    args = sidecar["args"]
    assert args[0] == "sidecar"
    assert args[args.index("--gateway") + 1] == f"http://gg-grantgate-s3.{NAMESPACE}.svc:9000"
    assert args[args.index("--listen") + 1] == "127.0.0.1:9000"
    token = next(v for v in pod["volumes"] if v["name"] == "grantgate-token")
    projected = token["projected"]["sources"][0]["serviceAccountToken"]
    assert projected["audience"] == "grantgate"
    mount = sidecar["volumeMounts"][0]
    assert args[args.index("--token-file") + 1] == f"{mount['mountPath']}/{projected['path']}"
    (train,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in train["env"]}
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9000"
    assert env["AWS_ACCESS_KEY_ID"] == "placeholder"
    assert env["HOME"] == "/tmp"  # the job's own env is kept
    assert pod["serviceAccountName"] == "trainer"


def test_network_policy_limits_who_reaches_the_gateway_and_the_bucket() -> None:
    docs = render(*VALUES["full"])
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    gateway = next(p for p in policies if "namespace" not in p["metadata"])
    s3_rule = next(r for r in gateway["spec"]["ingress"] if r["ports"][0]["port"] == "s3")
    assert s3_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"grantgate.io/client": "true"}
    bucket_rule = gateway["spec"]["egress"][1]
    assert [p["ipBlock"]["cidr"] for p in bucket_rule["to"]] == ["52.218.0.0/17", "3.5.64.0/21"]
    denied = {p["metadata"]["namespace"]: p for p in policies if "namespace" in p["metadata"]}
    assert set(denied) == {"ml", "eval"}
    block = denied["ml"]["spec"]["egress"][0]["to"][1]["ipBlock"]
    assert block["except"] == ["52.218.0.0/17", "3.5.64.0/21"]


def test_monitoring_resources_carry_the_repository_rules_and_dashboard() -> None:
    docs = render(*VALUES["full"])
    rules = find(docs, "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "grantgate-rules.yaml").read_text())
    assert rules["spec"] == shipped
    dashboard = find(docs, "ConfigMap", "gg-grantgate-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped_dashboard = json.loads((ROOT / "deploy" / "grafana" / "grantgate.json").read_text())
    assert json.loads(dashboard["data"]["grantgate.json"]) == shipped_dashboard
    monitor = find(docs, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    control = find(docs, "Service", "gg-grantgate-control")
    assert control["metadata"]["labels"]["app.kubernetes.io/name"] == "grantgate"  # -> job="grantgate"


@pytest.mark.parametrize("values", sorted(VALUES))
def test_metrics_need_a_token_the_service_monitor_sends(values: str) -> None:
    docs = render(*VALUES[values], "--set", "metrics.serviceMonitor.enabled=true")
    gateway = next(c for c in find(docs, "Deployment")["spec"]["template"]["spec"]["containers"])
    env = {e["name"]: e for e in gateway["env"]}
    ref = env["GRANTGATE_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
    (endpoint,) = find(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": ref}
    secret = find(docs, "Secret", ref["name"])
    assert len(base64.b64decode(secret["data"][ref["key"]])) >= 32
