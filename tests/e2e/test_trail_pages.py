"""The approvers' pages in a real browser against a real gateway: real S3 traffic through it writes the
audit rows that the audit trail, a grant's page and who-had-access then show, to the byte.

owen approves `models` (not an admin), carol is an admin, alice and bob hold grants. Each new page is
saved under docs/screenshots/ for the README.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner
from support.access import api, read
from support.browser import chromium
from support.observed import eventually
from support.world import BUCKET, ROOT, Identity, World, running_world

from proxy.cli import main

SCREENSHOTS = ROOT / "docs" / "screenshots"
MiB = 1024 * 1024
AREA = "models/trail/"
WHY = "Compare the trail checkpoint against the baseline"

POLICY = f"""
[web]
dev_login = true

[policy]
admin_groups = ["security"]

[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]

[policy.resources.training-data]
paths = ["s3://{BUCKET}/training-data/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml"]
actions = ["read", "list", "write"]
max_duration = "8h"
approver_groups = ["model-owners"]
ticket_pattern = "^ML-[0-9]+$"

[[policy.rules]]
resource = "training-data"
requester_groups = ["ml"]
actions = ["read"]
approver_groups = ["security"]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("trail-world"), extra_config=POLICY) as w:
        yield w


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def people(world: World) -> dict[str, Identity]:
    return {
        "alice": world.person("alice", ("ml",)),
        "bob": world.person("bob", ("ml",)),
        "owen": world.person("owen", ("model-owners",)),
        "carol": world.person("carol", ("security",)),
    }


@pytest.fixture(scope="module")
def traffic(world: World, people: dict[str, Identity]) -> dict[str, Any]:
    """alice's approved grant on models/trail/, used for real: 3 MiB and 1 MiB read, 2 MiB written,
    then a read of training-data she holds nothing on (denied); bob's earlier grant, revoked unused."""
    alice, owen = people["alice"], people["owen"]
    upstream = world.upstream()
    upstream.put_object(Bucket=BUCKET, Key=AREA + "a.bin", Body=b"a" * 3 * MiB)
    upstream.put_object(Bucket=BUCKET, Key=AREA + "b.bin", Body=b"b" * MiB)
    upstream.put_object(Bucket=BUCKET, Key="training-data/prefs.jsonl", Body=b"{}")
    bobs = world.grant(people["bob"], f"s3://{BUCKET}/{AREA}", "read")
    world.revoke(bobs)

    body = {
        "resource": f"s3://{BUCKET}/{AREA}",
        "actions": ["read", "write"],
        "duration": "2h",
        "justification": WHY,
        "ticket": "ML-4711",
    }
    created = api(world, world.api_token(alice), "POST", "/requests", body)[1]
    approved = api(
        world, world.api_token(owen), "POST", f"/requests/{created['id']}/approve", {"comment": "go ahead"}
    )[1]
    grant_id = approved["grant"]["id"]
    world.sync()
    client = world.client(alice)
    assert len(read(world, alice, AREA + "a.bin")) == 3 * MiB
    assert len(read(world, alice, AREA + "b.bin")) == MiB
    client.put_object(Bucket=BUCKET, Key=AREA + "c.bin", Body=b"c" * 2 * MiB)
    with pytest.raises(ClientError):
        read(world, alice, "training-data/prefs.jsonl")
    token = world.api_token(people["carol"])
    eventually(
        lambda: api(world, token, "GET", f"/grants/{grant_id}/usage")[1]["requests"] == 3,
        what="the three requests counted under alice's grant",
    )
    return {"grant_id": grant_id, "bobs": bobs.id}


def new_page(browser: Any, world: World, path: str, who: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(world.http.control_url + path)
    assert "/signin" in page.url
    page.locator(f"button.person[value='{who}']").click()
    page.wait_for_load_state()
    assert "/signin" not in page.url, page.content()
    return page


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def trail_rows(page: Any) -> list[dict[str, str]]:
    rows = page.locator("table.trail tbody tr")
    return [
        {
            "seq": r.get_attribute("data-seq") or "",
            "what": r.locator("td").nth(2).inner_text().strip(),
            "target": r.locator("td").nth(3).inner_text().replace("\n", "").strip(),
            "outcome": r.locator("td").nth(4).inner_text().strip(),
            "bytes": r.locator("td").nth(5).inner_text().strip(),
            "grant": r.locator("td").nth(6).inner_text().strip(),
        }
        for r in rows.all()
    ]


def test_the_audit_trail_shows_the_real_requests_newest_first_with_filters(
    world: World, browser: Any, traffic: dict[str, Any]
) -> None:
    grant_id = traffic["grant_id"]
    page = new_page(browser, world, "/audit?principal=alice", "carol")
    rows = [r for r in trail_rows(page) if r["what"] in ("read", "write")]
    assert [(r["what"], r["target"].rsplit("/", 1)[-1]) for r in rows] == [
        ("read", "prefs.jsonl"),
        ("write", "c.bin"),
        ("read", "b.bin"),
        ("read", "a.bin"),
    ]
    assert [r["bytes"] for r in rows[1:]] == ["↑ 2 MiB", "↓ 1 MiB", "↓ 3 MiB"]
    assert rows[0]["outcome"].lower().startswith("deny") and rows[0]["grant"] == ""
    assert {r["grant"] for r in rows[1:]} == {grant_id}
    seqs = [int(r["seq"]) for r in trail_rows(page)]
    assert seqs == sorted(seqs, reverse=True)

    # Filters, through the form as a person uses it: denied reads only.
    page.select_option("select[name=decision]", "deny")
    page.select_option("select[name=action]", "read")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()
    assert "decision=deny" in page.url and "action=read" in page.url
    assert [(r["what"], r["target"]) for r in trail_rows(page)] == [
        ("read", f"s3://{BUCKET}/training-data/prefs.jsonl")
    ]
    # By prefix, and by grant: the three requests made under it, after the decisions that made it.
    page.goto(world.http.control_url + f"/audit?resource=s3://{BUCKET}/{AREA}b")
    assert [r["target"] for r in trail_rows(page)] == [f"s3://{BUCKET}/{AREA}b.bin"]
    page.goto(world.http.control_url + f"/audit?grant={grant_id}")
    whats = [r["what"] for r in trail_rows(page)]
    assert whats[:3] == ["write", "read", "read"] and "grant_created" in whats[3:], whats
    shoot(page, "audit-trail")

    # The row's grant links to the grant's page.
    page.locator(f"table.trail a[href='/grants/{grant_id}']").first.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/grants/{grant_id}")


def test_the_trail_pages_by_sequence_without_gaps_or_repeats(
    world: World, browser: Any, people: dict[str, Identity], traffic: dict[str, Any]
) -> None:
    dora = world.person("dora", ("ml",))
    grant = world.grant(dora, f"s3://{BUCKET}/{AREA}", "read")
    client = world.client(dora)
    for _ in range(60):  # more than a page (50)
        client.head_object(Bucket=BUCKET, Key=AREA + "b.bin")
    token = world.api_token(people["carol"])
    eventually(
        lambda: api(world, token, "GET", f"/grants/{grant.id}/usage")[1]["requests"] == 60,
        what="dora's sixty requests in the trail",
    )
    page = new_page(browser, world, f"/audit?grant={grant.id}", "carol")
    first = [int(r["seq"]) for r in trail_rows(page)]
    page.get_by_role("link", name="Older").click()
    page.wait_for_load_state()
    second = [int(r["seq"]) for r in trail_rows(page)]
    assert (len(first), len(second)) == (50, 10)
    assert first + second == sorted(first + second, reverse=True) and len(set(first + second)) == 60
    assert page.get_by_role("link", name="Older").count() == 0
    assert page.get_by_role("link", name="Newest").count() == 1


def test_an_approver_sees_the_trail_of_what_they_approve_and_a_requester_none_of_it(
    world: World, browser: Any, traffic: dict[str, Any]
) -> None:
    owen = new_page(browser, world, "/audit?principal=alice", "owen")
    targets = [r["target"] for r in trail_rows(owen)]
    assert f"s3://{BUCKET}/{AREA}a.bin" in targets
    assert not any("training-data" in t for t in targets)  # not a resource owen approves
    assert "You see the resources you approve: models" in owen.locator(".lead").inner_text()

    alice = new_page(browser, world, "/audit", "alice")
    assert alice.locator("h1").inner_text() == "Not for you"
    alice.goto(world.http.control_url + f"/history?resource=s3://{BUCKET}/{AREA}")
    assert alice.locator("h1").inner_text() == "Not for you"
    assert alice.locator("nav a", has_text="Audit trail").count() == 0


def test_a_grants_page_shows_who_why_and_what_it_moved(
    world: World, browser: Any, traffic: dict[str, Any]
) -> None:
    grant_id = traffic["grant_id"]
    page = new_page(browser, world, f"/grants/{grant_id}", "owen")
    facts = page.locator("dl.grant-facts").inner_text()
    assert "alice" in facts and WHY in facts and "ML-4711" in facts
    assert page.locator("dd.status").inner_text().lower() == "active"
    assert "owen" in page.locator("dd.approvals").inner_text()
    assert "go ahead" in page.locator("dd.approvals").inner_text()
    use = page.locator("dl.usage-facts")
    assert use.locator("[data-usage=bytes_read]").get_attribute("data-bytes") == str(4 * MiB)
    assert use.locator("[data-usage=bytes_written]").get_attribute("data-bytes") == str(2 * MiB)
    assert use.locator("[data-usage=requests]").inner_text() == "3"
    assert "never used" not in use.locator("[data-usage=last_used_at]").inner_text()
    keys = page.locator("table.top-keys tbody tr")
    assert [keys.nth(i).locator("td").first.inner_text().replace("\n", "") for i in range(3)] == [
        f"s3://{BUCKET}/{AREA}a.bin",
        f"s3://{BUCKET}/{AREA}c.bin",
        f"s3://{BUCKET}/{AREA}b.bin",
    ]
    assert keys.nth(0).locator("td").nth(2).get_attribute("data-bytes") == str(3 * MiB)
    shoot(page, "grant-usage")

    # The same numbers as JSON, for the CLI's users.
    token = world.api_token(world.person("carol"))
    usage = api(world, token, "GET", f"/grants/{grant_id}/usage")[1]
    assert (usage["bytes_read"], usage["bytes_written"], usage["objects_read"]) == (4 * MiB, 2 * MiB, 2)
    assert [k["target"].rsplit("/", 1)[-1] for k in usage["top_keys"]] == ["a.bin", "c.bin", "b.bin"]

    # Someone who may not see the grant learns nothing about it.
    stranger = new_page(browser, world, f"/grants/{grant_id}", "bob")
    assert stranger.locator("h1").inner_text() == "No such grant"


def test_bytes_used_show_on_my_access_and_active_grants_for_a_grant_without_budget(
    world: World, browser: Any, traffic: dict[str, Any]
) -> None:
    grant_id = traffic["grant_id"]
    for who, path in (("alice", "/access"), ("owen", "/grants")):
        page = new_page(browser, world, path, who)
        cell = page.locator(f"tr#{grant_id} a.used")
        assert cell.get_attribute("data-bytes") == str(6 * MiB), who
        assert cell.inner_text() == "6 MiB"
        assert "no limit" in page.locator(f"tr#{grant_id}").inner_text()  # no budget, bytes shown anyway


def test_who_had_access_when_lists_each_grant_with_its_span_approver_and_bytes(
    world: World, browser: Any, traffic: dict[str, Any]
) -> None:
    grant_id, bobs = traffic["grant_id"], traffic["bobs"]
    page = new_page(browser, world, "/history", "owen")
    page.fill("input[name=resource]", f"s3://{BUCKET}/{AREA}a.bin")  # an object: grants over its prefix
    page.fill("input[name=since]", "5m")  # a short range: the spans show as bars
    page.get_by_role("button", name="Show").click()
    page.wait_for_load_state()
    rows = page.locator("table.history tbody tr")
    ids = [r.get_attribute("id") for r in rows.all()]
    assert ids[:2] == [bobs, grant_id], ids  # bob's came (and went) first
    mine = page.locator(f"tr#{grant_id}")
    assert "alice" in mine.inner_text() and "owen" in mine.inner_text()
    assert mine.locator("td[data-bytes]").get_attribute("data-bytes") == str(6 * MiB)
    assert page.locator(f"tr#{bobs} td[data-bytes]").get_attribute("data-bytes") == "0"
    # bob's revoked grant ended before alice's began; hers runs to the end of the range (now).
    held = {gid: page.locator(f"tr#{gid} td.span time").all() for gid in (bobs, grant_id)}
    bob_end, alice_start = (
        held[bobs][1].get_attribute("datetime"),
        held[grant_id][0].get_attribute("datetime"),
    )
    assert bob_end and alice_start and datetime.fromisoformat(bob_end) <= datetime.fromisoformat(alice_start)
    alice_bar = page.locator(f"tr#{grant_id} rect.timeline-span")
    alice_end = float(alice_bar.get_attribute("x") or 0) + float(alice_bar.get_attribute("width") or 0)
    assert alice_end == pytest.approx(1000, abs=1)
    shoot(page, "access-history")

    # JSON: the same grants, spans and bytes.
    token = world.api_token(world.person("owen"))
    resource = quote(f"s3://{BUCKET}/{AREA}", safe="")
    status, history = api(world, token, "GET", f"/access-history?resource={resource}&since=1h")
    assert status == 200, history
    found = {g["grant_id"]: g for g in history["grants"]}
    assert found[grant_id]["approved_by"] == "owen"
    assert found[grant_id]["bytes_read"] + found[grant_id]["bytes_written"] == 6 * MiB
    assert found[bobs]["until"] < found[grant_id]["until"]
    status, problem = api(
        world, world.api_token(world.person("alice")), "GET", f"/access-history?resource={resource}"
    )
    assert (status, problem["code"]) == (403, "forbidden")
    status, problem = api(world, token, "GET", "/access-history?resource=nowhere")
    assert (status, problem["code"]) == (400, "invalid_query")


def test_the_cli_asks_the_gateway_who_had_access(
    world: World, traffic: dict[str, Any], tmp_path: Path
) -> None:
    env = {
        "GRANTGATE_API_URL": world.http.control_url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "GRANTGATE_CONFIG": "",
        "GRANTGATE_TOKEN": world.api_token(world.person("owen")),
    }
    result = CliRunner().invoke(main, ["audit", "history", f"s3://{BUCKET}/{AREA}", "--since", "1h"], env=env)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if traffic["grant_id"] in line)
    assert line.split()[0] == "alice" and "owen" in line and "6 MiB" in line

    usage = CliRunner().invoke(main, ["audit", "usage", traffic["grant_id"]], env=env)
    assert usage.exit_code == 0, usage.output
    moved = [line.split() for line in usage.stdout.splitlines() if "requests  s3://" in line]
    assert [(m[0] + " " + m[1], m[-1].rsplit("/", 1)[-1]) for m in moved] == [
        ("3 MiB", "a.bin"),
        ("2 MiB", "c.bin"),
        ("1 MiB", "b.bin"),
    ]


def test_the_new_screenshots_are_referenced_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("audit-trail", "grant-usage", "access-history"):
        assert f"docs/screenshots/{name}.png" in readme
        assert (SCREENSHOTS / f"{name}.png").is_file()
