"""Dataset terms end to end: a resource with terms refuses requests that do not acknowledge exactly its
text, through the API and the CLI of a real gateway; the acknowledgement is in the grant's JSON and in
the audit trail."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.access import api, read
from support.browser import chromium
from support.observed import audit_events, eventually
from support.world import BUCKET, Identity, World, running_world

from proxy.cli import main

TERMS = "Licensed for internal evaluation only. No use for training external models."
TERMS_SHA256 = hashlib.sha256(TERMS.encode()).hexdigest()

POLICY = f"""
[web]
dev_login = true

[policy]

[policy.resources.corpus]
description = "Licensed text corpus"
paths = ["s3://{BUCKET}/corpus/"]
terms = "{TERMS}"

[policy.resources.models]
paths = ["s3://{BUCKET}/models/"]

[[policy.rules]]
resource = "corpus"
requester_groups = ["infra", "ml"]
actions = ["read"]
instant_groups = ["infra"]
approver_groups = ["security"]
justification_required = false

[[policy.rules]]
resource = "models"
requester_groups = ["infra"]
actions = ["read"]
approvals_required = 0
justification_required = false
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("terms-world"), extra_config=POLICY) as w:
        yield w


def ask(world: World, who: Identity, **more: str) -> tuple[int, dict[str, object]]:
    body = {"resource": "corpus", "actions": ["read"], **more}
    return api(world, world.api_token(who), "POST", "/requests", body)


def test_resources_show_the_terms_and_their_hash(world: World, unique: str) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    status, listed = api(world, world.api_token(bob), "GET", "/resources")
    assert status == 200
    by_name = {r["name"]: r for r in listed["resources"]}
    assert (by_name["corpus"]["terms"], by_name["corpus"]["terms_sha256"]) == (TERMS, TERMS_SHA256)
    assert by_name["corpus"]["rule"]["terms_sha256"] == TERMS_SHA256
    assert by_name["models"]["terms"] is None


def test_a_request_without_or_with_a_stale_acknowledgement_is_refused_with_the_terms(
    world: World, unique: str
) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    status, problem = ask(world, bob)
    assert status == 422 and problem["code"] == "terms_not_accepted", problem
    assert (problem["terms"], problem["terms_sha256"], problem["resource"]) == (TERMS, TERMS_SHA256, "corpus")
    stale = hashlib.sha256(b"Licensed for internal evaluation only.").hexdigest()
    status, problem = ask(world, bob, accept_terms=stale)
    assert status == 422 and problem["code"] == "terms_changed", problem
    assert (problem["terms"], problem["terms_sha256"]) == (TERMS, TERMS_SHA256)
    # Nothing was granted by the refusals.
    status, grants = api(world, world.api_token(bob), "GET", f"/grants?principal={bob.name}")
    assert status == 200 and grants["grants"] == []
    # A resource without terms needs no acknowledgement.
    status, created = api(
        world, world.api_token(bob), "POST", "/requests", {"resource": "models", "actions": ["read"]}
    )
    assert status == 201 and created["grant"]["terms_accepted"] is None, created


def test_the_right_hash_grants_and_the_acknowledgement_is_in_the_grant_and_the_audit(
    world: World, unique: str
) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    key = f"corpus/{unique}/shard-0.parquet"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"PAR1 rows")
    status, created = ask(world, bob, accept_terms=TERMS_SHA256.upper())
    assert status == 201 and created["status"] == "approved", created
    accepted = created["grant"]["terms_accepted"]
    assert (accepted["by"], accepted["sha256"], accepted["text"]) == (bob.name, TERMS_SHA256, TERMS)
    assert accepted["at"].endswith("Z")
    assert created["terms_accepted"] == accepted
    status, grant = api(world, world.api_token(bob), "GET", f"/grants/{created['grant']['id']}")
    assert status == 200 and grant["terms_accepted"] == accepted
    world.sync()
    assert read(world, bob, key) == b"PAR1 rows"

    for kind in ("request_created", "grant_created"):
        recorded = eventually(
            lambda kind=kind: audit_events(world, kind=kind, principal=bob.name), what=f"the {kind} record"
        )
        assert recorded[-1].body["event"]["terms_accepted"] == accepted, recorded[-1].body


def test_a_pending_request_keeps_the_acknowledgement_into_its_grant(world: World, unique: str) -> None:
    alice = world.person(f"alice-{unique}", ("ml",))
    carol = world.person(f"carol-{unique}", ("security",))
    status, created = ask(world, alice, accept_terms=TERMS_SHA256)
    assert status == 201 and created["status"] == "pending", created
    status, approved = api(world, world.api_token(carol), "POST", f"/requests/{created['id']}/approve", {})
    assert status == 200, approved
    status, grant = api(world, world.api_token(alice), "GET", f"/grants/{approved['grant_id']}")
    assert grant["terms_accepted"]["by"] == alice.name and grant["terms_accepted"]["sha256"] == TERMS_SHA256


def test_an_extension_goes_on_under_the_accepted_terms(world: World, unique: str) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    status, created = ask(world, bob, accept_terms=TERMS_SHA256)
    assert status == 201, created
    status, extended = api(
        world, world.api_token(bob), "POST", f"/grants/{created['grant']['id']}/extend", {"duration": "1h"}
    )
    assert status == 201 and extended["grant"]["terms_accepted"] == created["grant"]["terms_accepted"]


# --- the CLI ---


def cli(world: World, who: Identity, tmp_path: Path, *args: str, answer: str | None = None) -> Result:
    env = {
        "GRANTGATE_API_URL": world.http.control_url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "GRANTGATE_CONFIG": "",
        "GRANTGATE_TOKEN": world.api_token(who),
    }
    return CliRunner().invoke(main, list(args), env=env, input=answer)


def test_the_cli_shows_the_terms_and_asks(world: World, unique: str, tmp_path: Path) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    declined = cli(world, bob, tmp_path, "request", "corpus", answer="n\n")
    assert declined.exit_code == 2, declined.output
    assert TERMS in declined.stdout and TERMS_SHA256 in declined.stdout
    assert "has dataset terms" in declined.stderr

    agreed = cli(world, bob, tmp_path, "request", "corpus", "--json", answer="y\n")
    assert agreed.exit_code == 0, (agreed.output, agreed.exception)
    created = json.loads(agreed.stdout[agreed.stdout.index("{") :])
    assert created["grant"]["terms_accepted"]["sha256"] == TERMS_SHA256


def test_the_cli_takes_the_hash_and_refuses_a_stale_one(world: World, unique: str, tmp_path: Path) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    result = cli(world, bob, tmp_path, "request", "corpus", "--accept-terms", TERMS_SHA256)
    assert result.exit_code == 0 and "Granted: g_" in result.stdout, result.output
    stale = cli(world, bob, tmp_path, "request", "corpus", "--accept-terms", "0" * 64)
    assert stale.exit_code == 2 and "have changed" in stale.stderr, stale.output
    assert TERMS in stale.stdout and TERMS_SHA256 in stale.stdout  # what to accept now


# --- the web request form, in headless chromium ---


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with chromium() as b:
        yield b


def request_form(world: World, browser: Any, who: Identity) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(world.http.control_url + "/request?resource=corpus")
    page.locator(f"button.person[value='{who.name}']").click()
    page.wait_for_load_state()
    assert page.url.startswith(world.http.control_url + "/request?"), page.url
    return page


def test_the_web_form_shows_the_terms_and_requires_the_box(world: World, browser: Any, unique: str) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    page = request_form(world, browser, bob)
    assert page.locator("#terms-text").inner_text().strip() == TERMS
    submit = page.get_by_role("button", name="Get access now")
    submit.click()  # the unticked box stops the browser from sending the form
    assert not page.locator("#accept-terms").evaluate("box => box.validity.valid")
    assert page.url.startswith(world.http.control_url + "/request?")
    page.check("#accept-terms")
    submit.click()
    page.wait_for_url(world.http.control_url + "/access**")
    assert "Access granted" in page.locator(".flash-success").inner_text()
    status, grants = api(world, world.api_token(bob), "GET", f"/grants?principal={bob.name}")
    assert status == 200 and [g["terms_accepted"]["sha256"] for g in grants["grants"]] == [TERMS_SHA256]


def test_the_web_form_refuses_terms_changed_since_it_was_shown(
    world: World, browser: Any, unique: str
) -> None:
    bob = world.person(f"bob-{unique}", ("infra",))
    page = request_form(world, browser, bob)
    # As if the policy's terms changed after the page was loaded: it sends the hash of older text.
    page.locator("input[name=terms_sha256]").evaluate("input => { input.value = '0'.repeat(64) }")
    page.check("#accept-terms")
    page.get_by_role("button", name="Get access now").click()
    page.wait_for_load_state()
    assert "have changed" in page.locator(".flash-error").inner_text()
    assert page.locator("#terms-text").inner_text().strip() == TERMS  # shown again, as they are now
    assert page.locator("input[name=terms_sha256]").input_value() == TERMS_SHA256
    status, grants = api(world, world.api_token(bob), "GET", f"/grants?principal={bob.name}")
    assert status == 200 and grants["grants"] == []
