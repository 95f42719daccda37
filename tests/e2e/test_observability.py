"""Audit, metrics and anomaly alerts from real traffic through two real gateway processes.

Both gateways write to one store, so their audit records form one chain; each test uses its own
principals, because anomaly rules keep per-principal memory.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from support.observed import (
    EXFILTRATION_BYTES,
    api,
    api_token,
    audit_events,
    eventually,
    observed_world,
    sample,
    scrape,
    with_audit,
)
from support.world import BUCKET, ROOT, World, run_sync

from proxy.identity.principals import Principal
from proxy.identity.sessions import issue_session
from proxy.store.sql import SqlStore
from proxy.store.suspensions import GrantSuspensions


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with observed_world(tmp_path_factory.mktemp("observed")) as world:
        yield world


@pytest.fixture
def tag() -> str:
    return secrets.token_hex(4)


def request_id(response: dict[str, Any]) -> str:
    return response["ResponseMetadata"]["HTTPHeaders"]["x-grantgate-request-id"]


def alerts(world: World, kind: str, principal: str | None = None) -> list[dict[str, Any]]:
    return [e.body for e in audit_events(world, kind=f"anomaly.{kind}", principal=principal)]


def logged(world: World, event: str) -> list[dict[str, Any]]:
    out = []
    for gateway in (world.http, world.https):
        for line in gateway.log_path.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    out.append(record)
    return out


def test_every_request_lands_in_the_audit_store_with_its_outcome(observed: World, tag: str) -> None:
    ann = observed.person(f"ann-{tag}")
    grant = observed.grant(ann, f"s3://{BUCKET}/datasets/{tag}/", "read,write")
    s3 = observed.client(ann)
    put = s3.put_object(Bucket=BUCKET, Key=f"datasets/{tag}/a.parquet", Body=b"p" * 4096)
    got = s3.get_object(Bucket=BUCKET, Key=f"datasets/{tag}/a.parquet")
    assert got["Body"].read() == b"p" * 4096
    with pytest.raises(ClientError):
        s3.get_object(Bucket=BUCKET, Key=f"models/{tag}/secret.bin")

    events = eventually(
        lambda: (
            (found := audit_events(observed, principal=ann.name, kind="s3_request"))
            and len(found) >= 3
            and found
        ),
        what="ann's audit records",
    )
    by_id = {e.body["event"]["request_id"]: e.body for e in events if e.body["kind"] == "s3_request"}
    written, read = by_id[request_id(put)], by_id[request_id(got)]
    assert (written["decision"], written["grant_id"], written["event"]["bytes_in"]) == (
        "allow",
        grant.id,
        4096,
    )
    assert (read["decision"], read["event"]["bytes_out"], read["event"]["status"]) == ("allow", 4096, 200)
    assert read["resource"] == "datasets" and read["target"] == f"s3://{BUCKET}/datasets/{tag}/a.parquet"
    [refused] = [body for body in by_id.values() if body["decision"] == "deny"]
    assert refused["event"]["reason"] == "AccessDenied" and refused["resource"] == "models"

    usage = eventually(lambda: with_audit(observed, lambda a: a.usage(grant.id)), what="usage")
    assert (usage.objects_written, usage.bytes_written, usage.objects_read, usage.bytes_read) == (
        1,
        4096,
        1,
        4096,
    )


def test_both_gateways_extend_one_chain_that_verifies(observed: World, tag: str) -> None:
    bo = observed.person(f"bo-{tag}")
    observed.grant(bo, f"s3://{BUCKET}/datasets/{tag}/", "list")
    for tls in (False, True):
        observed.client(bo, tls=tls).list_objects_v2(Bucket=BUCKET, Prefix=f"datasets/{tag}/")
    eventually(lambda: len(audit_events(observed, principal=bo.name, kind="s3_request")) == 2, what="records")
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "audit", "verify", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"GRANTGATE_STORE_URL": observed.store_url, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["checked"] == report["head_seq"] > 2


def test_audit_command_without_a_config_asks_the_api_and_creates_no_database(
    observed: World, tag: str, tmp_path: Path
) -> None:
    di = observed.person(f"di-{tag}")
    with pytest.raises(ClientError):  # refused: no grant
        observed.client(di).list_objects_v2(Bucket=BUCKET, Prefix=f"datasets/{tag}/")
    eventually(lambda: audit_events(observed, principal=di.name, kind="s3_request"), what="di's record")
    auditor = observed.person(f"al-{tag}", groups=("security",))
    base = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}

    def audit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "proxy", "audit", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**base, **env},
            check=False,
        )

    via_api = {
        "GRANTGATE_API_URL": observed.http.control_url,
        "GRANTGATE_TOKEN": api_token(observed, auditor),
    }
    listed = audit("--principal", di.name, "--since", "24h", **via_api)
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"s3_request\s+{re.escape(di.name)}\s+deny", listed.stdout), listed.stdout
    verified = audit("verify", "--json", **via_api)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True

    nowhere = audit("--principal", di.name)
    assert nowhere.returncode != 0 and "Traceback" not in nowhere.stderr
    assert "no API address" in nowhere.stderr and "--config" in nowhere.stderr
    assert list(tmp_path.glob("*.db")) == []


def test_metrics_count_requests_bytes_and_principals(observed: World, tag: str) -> None:
    cy = observed.person(f"cy-{tag}")
    observed.grant(cy, f"s3://{BUCKET}/datasets/{tag}/", "read")
    observed.upstream().put_object(Bucket=BUCKET, Key=f"datasets/{tag}/m.bin", Body=b"m" * 10_000)
    before = scrape(observed.http.control_url)
    s3 = observed.client(cy)
    for _ in range(3):
        s3.get_object(Bucket=BUCKET, Key=f"datasets/{tag}/m.bin")["Body"].read()
    after = scrape(observed.http.control_url)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    ok = {"operation": "GetObject", "action": "read", "decision": "allow", "status_class": "2xx"}
    assert delta("grantgate_s3_requests_total", **ok) == 3
    assert delta("grantgate_s3_sent_bytes_total", resource="datasets") == 30_000
    assert delta("grantgate_s3_request_duration_seconds_count", action="read") == 3
    assert delta("grantgate_s3_time_to_first_byte_seconds_count", action="read") == 3
    assert sample(after, "grantgate_principal_sent_bytes_total", principal=cy.name) == 30_000
    assert sample(after, "grantgate_grants_active") >= 1
    assert sample(after, "grantgate_state_version") == observed.http.state_version()


def test_exfiltration_alerts_and_suspends_the_grant_until_reconfirmed(observed: World, tag: str) -> None:
    dee = observed.person(f"dee-{tag}")
    grant = observed.grant(dee, f"s3://{BUCKET}/models/{tag}/", "read")
    size = EXFILTRATION_BYTES // 2 + 1000
    observed.upstream().put_object(Bucket=BUCKET, Key=f"models/{tag}/weights.bin", Body=b"w" * size)
    s3 = observed.client(dee)
    for _ in range(2):
        assert len(s3.get_object(Bucket=BUCKET, Key=f"models/{tag}/weights.bin")["Body"].read()) == size

    [alert] = eventually(lambda: alerts(observed, "exfiltration", dee.name), what="exfiltration alert")
    assert alert["grant_id"] == grant.id and alert["decision"] == "suspend_grant"
    assert alert["event"]["details"]["bytes"] == 2 * size
    # The suspension reaches the gateways like a revocation: the next read is refused.
    observed.sync()
    with pytest.raises(ClientError) as refused:
        s3.get_object(Bucket=BUCKET, Key=f"models/{tag}/weights.bin")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    samples = scrape(observed.http.control_url)
    assert sample(samples, "grantgate_anomaly_alerts_total", kind="exfiltration") >= 1
    assert sample(samples, "grantgate_grant_suspensions_total") >= 1
    assert [e.body["kind"] for e in audit_events(observed, grant_id=grant.id, plane="control")] == [
        "grant_suspended"
    ]
    assert any(
        r["kind"] == "exfiltration" and r["principal"] == dee.name for r in logged(observed, "anomaly_alert")
    )

    # Its holder cannot lift the suspension; an admin (or an approver of the resource) re-confirms it.
    lift = f"/audit/suspensions/{grant.id}/lift"
    assert api(observed, "POST", lift, api_token(observed, dee))[0] == 403
    admin = api_token(observed, observed.person(f"sec-{tag}", groups=("security",)))
    status, listed = api(observed, "GET", "/audit/suspensions", admin)
    assert status == 200 and grant.id in [s["grant_id"] for s in listed["suspensions"]]
    status, lifted = api(observed, "POST", lift, admin)
    assert status == 200 and lifted["reconfirmed_by"] == f"sec-{tag}"
    assert api(observed, "POST", lift, admin)[0] == 409
    observed.sync()
    assert len(s3.get_object(Bucket=BUCKET, Key=f"models/{tag}/weights.bin")["Body"].read()) == size


def test_an_admin_cannot_lift_the_suspension_of_their_own_grant(observed: World, tag: str) -> None:
    holder = observed.person(f"sec-holder-{tag}", groups=("security",))  # an admin and an approver
    grant = observed.grant(holder, f"s3://{BUCKET}/models/{tag}/", "read")

    async def suspend() -> bool:
        store = await SqlStore.open(observed.store_url)
        try:
            return await GrantSuspensions(store).suspend_grant(grant.id, reason="test", now=datetime.now(UTC))
        finally:
            await store.close()

    assert run_sync(suspend())
    lift = f"/audit/suspensions/{grant.id}/lift"
    status, problem = api(observed, "POST", lift, api_token(observed, holder))
    assert status == 403 and "their own grant" in problem["detail"]
    other = api_token(observed, observed.person(f"sec-other-{tag}", groups=("security",)))
    status, lifted = api(observed, "POST", lift, other)
    assert status == 200 and lifted["reconfirmed_by"] == f"sec-other-{tag}"


def test_use_from_outside_the_configured_networks_alerts(observed: World, tag: str) -> None:
    eve = observed.person(f"eve-{tag}")
    observed.grant(eve, f"s3://{BUCKET}/datasets/{tag}/", "list")
    observed.client(eve).list_objects_v2(Bucket=BUCKET, Prefix=f"datasets/{tag}/")
    [alert] = eventually(lambda: alerts(observed, "outside_network", eve.name), what="outside-network alert")
    assert alert["event"]["source_ip"] == "127.0.0.1"
    assert alert["event"]["details"]["allowed_networks"] == ["10.0.0.0/8", "fd00::/8"]


def test_use_refused_outside_the_policys_source_networks_alerts(observed: World, tag: str) -> None:
    fay = observed.person(f"fay-{tag}", groups=("ml",))
    token = api_token(observed, fay)
    body = {"resource": f"s3://{BUCKET}/restricted/{tag}/", "actions": ["list"]}
    status, created = api(observed, "POST", "/requests", token, body)
    assert status == 201 and created["status"] == "approved", created
    observed.sync()
    with pytest.raises(ClientError) as refused:
        observed.client(fay).list_objects_v2(Bucket=BUCKET, Prefix=f"restricted/{tag}/")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    [alert] = eventually(lambda: alerts(observed, "outside_network", fay.name), what="policy network alert")
    assert alert["resource"] == "restricted" and alert["event"]["source_ip"] == "127.0.0.1"
    assert alert["event"]["details"] == {"allowed_networks": ["192.168.0.0/16"], "refused": True}
    [denied] = [e.body for e in audit_events(observed, principal=fay.name, kind="s3_request")]
    assert denied["event"]["deny_reason"] == "source_network"
    # The workflow's own events are in the same trail.
    kinds = {e.body["kind"] for e in audit_events(observed, grant_id=created["grant_id"])}
    assert {"request_created", "grant_created"} <= kinds
    samples = scrape(observed.http.control_url)
    assert sample(samples, "grantgate_s3_denials_total", reason="source_network") >= 1


def test_a_burst_of_denials_alerts_once(observed: World, tag: str) -> None:
    gus = observed.person(f"gus-{tag}")
    s3 = observed.client(gus)
    for i in range(7):
        with pytest.raises(ClientError):
            s3.get_object(Bucket=BUCKET, Key=f"models/{tag}/{i}")
    [alert] = eventually(lambda: alerts(observed, "denial_burst", gus.name), what="denial burst alert")
    assert alert["event"]["details"]["count"] == 5
    samples = scrape(observed.http.control_url)
    assert sample(samples, "grantgate_s3_denials_total", reason="no_grant") >= 7
    assert sample(samples, "grantgate_anomaly_alerts_total", kind="denial_burst") >= 1


def test_a_reader_from_a_new_group_alerts(observed: World, tag: str) -> None:
    observed.upstream().put_object(Bucket=BUCKET, Key=f"models/{tag}/x", Body=b"x")
    ml = observed.person(f"hal-{tag}", groups=(f"ml-{tag}",))
    observed.grant(ml, f"s3://{BUCKET}/models/{tag}/", "read")
    observed.client(ml).get_object(Bucket=BUCKET, Key=f"models/{tag}/x")["Body"].read()
    marketing = observed.person(f"ivy-{tag}", groups=(f"marketing-{tag}",))
    observed.grant(marketing, f"s3://{BUCKET}/models/{tag}/", "read")
    observed.client(marketing).get_object(Bucket=BUCKET, Key=f"models/{tag}/x")["Body"].read()
    [alert] = eventually(lambda: alerts(observed, "new_group_reader", marketing.name), what="new group alert")
    assert alert["resource"] == "models" and f"ml-{tag}" in alert["event"]["details"]["known_groups"]
    assert alerts(observed, "new_group_reader", ml.name) == []


def test_the_audit_api_queries_exports_verifies_and_shows_usage(observed: World, tag: str) -> None:
    jo = observed.person(f"jo-{tag}")
    grant = observed.grant(jo, f"s3://{BUCKET}/datasets/{tag}/", "read")
    observed.upstream().put_object(Bucket=BUCKET, Key=f"datasets/{tag}/u", Body=b"u" * 700)
    observed.client(jo).get_object(Bucket=BUCKET, Key=f"datasets/{tag}/u")["Body"].read()
    auditor = observed.person(f"kay-{tag}", groups=("security",))
    token = api_token(observed, auditor)
    found = eventually(
        lambda: api(observed, "GET", f"/audit?principal={jo.name}&kind=s3_request", token)[1]["events"],
        what="API events",
    )
    assert [e["grant_id"] for e in found] == [grant.id]
    status, lines = api(observed, "GET", f"/audit?grant={grant.id}&format=jsonl", token)
    assert status == 200 and {e["kind"] for e in lines} == {"s3_request", "anomaly.outside_network"}
    assert [e["seq"] for e in lines if e["kind"] == "s3_request"] == [e["seq"] for e in found]
    # `?limit=` gives the newest events, as `grantgate audit --limit` does.
    status, newest = api(observed, "GET", f"/audit?grant={grant.id}&limit=1", token)
    assert [e["seq"] for e in newest["events"]] == [max(e["seq"] for e in lines)]
    assert newest["next_after"] is None
    status, report = api(observed, "GET", "/audit/verify", token)
    assert status == 200 and report["ok"] is True
    usage = eventually(
        lambda: (u := api(observed, "GET", f"/audit/usage/{grant.id}", token)[1])["bytes_read"] and u,
        what="usage",
    )
    assert (usage["objects_read"], usage["bytes_read"], usage["principal"]) == (1, 700, jo.name)

    # The holder sees its own grant's usage but not the whole trail.
    own = api_token(observed, jo)
    assert api(observed, "GET", f"/audit/usage/{grant.id}", own)[0] == 200
    status, problem = api(observed, "GET", "/audit", own)
    assert status == 403 and problem["code"] == "forbidden"
    assert api(observed, "GET", "/audit", "gg_not_a_token")[0] == 401


def test_no_secret_reaches_any_log_or_audit_output(observed: World, tag: str) -> None:
    """Credentials used in a real run never appear in the gateways' output nor in the audit trail."""
    kim = observed.person(f"kim-{tag}", groups=("security",))
    observed.grant(kim, f"s3://{BUCKET}/datasets/{tag}/", "read,write,list")
    seen: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        header = request.headers.get("Authorization")
        if header:
            seen.append(header.decode() if isinstance(header, bytes) else header)

    s3 = observed.client(kim)
    s3.meta.events.register("before-send.s3.*", capture)
    s3.put_object(Bucket=BUCKET, Key=f"datasets/{tag}/s", Body=b"s")
    s3.get_object(Bucket=BUCKET, Key=f"datasets/{tag}/s")["Body"].read()
    with pytest.raises(ClientError):
        s3.get_object(Bucket=BUCKET, Key=f"models/{tag}/nope")
    presigner = observed.client(kim, signature_version="s3v4")
    presigned = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": f"datasets/{tag}/s"}
    )
    with urllib.request.urlopen(presigned, timeout=5) as resp:
        assert resp.read() == b"s"
    creds = issue_session(
        observed.server_key,
        Principal(kim.name, frozenset({"security"})),
        now=datetime.now(UTC),
        ttl=timedelta(hours=1),
    )
    temporary = boto3.client(
        "s3",
        endpoint_url=observed.http.s3_url,
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
        region_name="us-east-1",
    )
    temporary.meta.events.register("before-send.s3.*", capture)
    temporary.list_objects_v2(Bucket=BUCKET, Prefix=f"datasets/{tag}/")
    token = api_token(observed, kim)
    assert api(observed, "GET", f"/audit?principal={kim.name}", token)[0] == 200
    eventually(lambda: len(audit_events(observed, principal=kim.name)) >= 5, what="kim's records")

    signatures = [m.group(1) for h in seen for m in [re.search(r"Signature=([0-9a-f]{64})", h)] if m]
    presigned_signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", presigned)
    assert len(signatures) >= 4 and presigned_signature is not None
    secrets_used = [
        kim.secret_access_key,
        creds.secret_access_key,
        creds.session_token,
        token,
        presigned_signature.group(1),
        *signatures,
        *seen,
        *(p.secret_access_key for p in observed._people.values()),
    ]
    export = subprocess.run(
        [sys.executable, "-m", "proxy", "audit", "export"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"GRANTGATE_STORE_URL": observed.store_url, "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    outputs = {
        "http log": observed.http.log_path.read_text(),
        "https log": observed.https.log_path.read_text(),
        "audit export": export,
    }
    assert kim.name in outputs["http log"] and kim.name in export  # the run really is in there
    for where, text in outputs.items():
        for secret in secrets_used:
            assert secret not in text, f"a secret appears in the {where}"


def test_metrics_need_no_token_but_the_audit_api_does(observed: World) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(observed.http.control_url + "/api/v1/audit", timeout=5)
    assert refused.value.code == 401
    with urllib.request.urlopen(observed.http.control_url + "/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "grantgate_s3_requests_total" in body and "Authorization" not in body


def test_bytes_that_are_not_utf8_in_a_header_are_audited_not_lost(observed: World, tag: str) -> None:
    # The User-Agent is not signed and anyone can send one: text that is not UTF-8 must neither break
    # the request's audit record nor the batch it is written with.
    host, port = observed.http.s3_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"GET /{BUCKET}/models/{tag}/x.bin HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
            + b"User-Agent: probe/\xff\xfe-"
            + tag.encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403")
    refused_id = re.search(rb"x-grantgate-request-id: (\S+)", answer, re.IGNORECASE)
    assert refused_id is not None

    ann = observed.person(f"ann-after-{tag}")
    observed.grant(ann, f"s3://{BUCKET}/datasets/{tag}/", "read,write")
    after = observed.client(ann).put_object(Bucket=BUCKET, Key=f"datasets/{tag}/b.bin", Body=b"b")

    wanted = {refused_id.group(1).decode(), request_id(after)}

    def both_stored() -> dict[str, dict[str, Any]] | None:
        recent = audit_events(observed, kind="s3_request", since=datetime.now(UTC) - timedelta(minutes=5))
        found = {e.body["event"]["request_id"]: e.body["event"] for e in recent}
        return {i: found[i] for i in wanted} if wanted <= found.keys() else None

    stored = eventually(both_stored, what="both requests audited")
    assert set(stored) == wanted
    assert stored[refused_id.group(1).decode()]["user_agent"] == f"probe/\ufffd\ufffd-{tag}"
    assert with_audit(observed, lambda a: a.verify()).ok
