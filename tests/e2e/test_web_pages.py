"""The web journey in a real browser (Debian's chromium driven by Playwright) against real gateways.

alice is denied by the gateway, follows the link from the 403 to the request form, submits it; carol
approves in her inbox; alice's boto3 read succeeds; the grant is revoked in the browser and the next read
is denied. Each page is saved under docs/screenshots/ for the README.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from playwright.sync_api import sync_playwright
from support.access import denied_link, read
from support.browser import CHROMIUM, CHROMIUM_ARGS
from support.world import BUCKET, ROOT, Identity, World, running_world

from proxy.store.sql import SqlStore

SCREENSHOTS = ROOT / "docs" / "screenshots"
KEY = "models/llama-3-8b-instruct.Q4_K_M.gguf"
WHY = "Evaluate the new Q4_K_M quantisation against last week's baseline"

POLICY = f"""
[web]
dev_login = true

[policy]
admin_groups = ["admins"]
sweep_interval_seconds = 0.5

[policy.resources.models]
description = "Model weights"
paths = ["s3://{BUCKET}/models/"]

[policy.resources.training-data]
description = "RLHF preference data"
paths = ["s3://{BUCKET}/training-data/"]

[[policy.rules]]
resource = "models"
requester_groups = ["ml", "infra"]
actions = ["read", "list"]
default_duration = "2h"
max_duration = "8h"
justification_min_length = 10
instant_groups = ["infra"]
approver_groups = ["security"]
approvals_required = 1

[[policy.rules]]
resource = "training-data"
requester_groups = ["ml"]
actions = ["read", "list"]
default_duration = "1h"
max_duration = "4h"
justification_min_length = 20
approver_groups = ["security"]
approvals_required = 1
break_glass = true

[[policy.standing]]
principal = "inference-server"
resource = "models"
actions = ["read"]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("web-world"), extra_config=POLICY) as w:
        yield w


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def people(world: World) -> dict[str, Identity]:
    return {
        "alice": world.person("alice", ("ml",)),
        "bob": world.person("bob", ("infra",)),
        "carol": world.person("carol", ("security",)),
    }


def new_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
    return context.new_page()


def sign_in(page: Any, name: str) -> None:
    """On the sign-in page: pick `name` from the development sign-in."""
    assert "/signin" in page.url, page.url
    page.locator(f"button.person[value='{name}']").click()
    page.wait_for_load_state()
    assert "/signin" not in page.url, page.content()


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_denied_user_requests_in_browser_approver_approves_and_revokes(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    alice = people["alice"]
    world.upstream().put_object(Bucket=BUCKET, Key=KEY, Body=b"GGUF weights")

    # 1. The gateway refuses alice and links to the request form; the link asks her to sign in first.
    link = denied_link(world, alice, KEY)
    page = new_page(browser)
    page.goto(link)
    assert "/signin" in page.url
    shoot(page, "sign-in")
    sign_in(page, "alice")

    # 2. Back on the form: prefilled with the policy area that contains the object, and the action.
    assert page.url.startswith(world.http.control_url + "/request?")
    assert page.locator("#resource").input_value() == f"s3://{BUCKET}/models/"
    assert page.locator("input[name=actions][value=read]").is_checked()
    assert not page.locator("input[name=actions][value=list]").is_checked()
    assert page.locator("#duration").input_value() == "2h"
    durations = page.locator("#duration option").evaluate_all("els => els.map(e => e.value)")
    assert durations[-1] == "8h" and "12h" not in durations  # never beyond the policy's maximum
    assert "1 approval from security" in page.locator("aside").inner_text()
    page.fill("#justification", WHY)
    shoot(page, "request-form")
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_load_state()

    # 3. My access: the request is pending, waiting for security.
    assert page.url.startswith(world.http.control_url + "/access")
    assert "waiting for 1 approval(s) from security" in page.locator(".flash-success").inner_text()
    row = page.locator("table tr", has_text=f"s3://{BUCKET}/models/")
    assert "pending" in row.inner_text().lower()
    request_id = row.locator(".mono").first.inner_text().strip()
    shoot(page, "my-access-pending")
    with pytest.raises(ClientError):
        read(world, alice, KEY)

    # 4. carol's inbox shows the request; she approves it with a comment.
    carol_page = new_page(browser)
    carol_page.goto(world.http.control_url + "/inbox")
    sign_in(carol_page, "carol")
    card = carol_page.locator(f"article#{request_id}")
    assert WHY in card.inner_text()
    assert carol_page.locator("nav .count").inner_text() == "1"
    shoot(carol_page, "inbox")
    card.locator("input[name=comment]").fill("ok for the eval")
    card.get_by_role("button", name="Approve").click()
    carol_page.wait_for_load_state()
    assert "alice has access for 2h" in carol_page.locator(".flash-success").inner_text()
    assert carol_page.locator(f"article#{request_id}").count() == 0

    # 5. alice's boto3 read now succeeds, and her page lists the grant with its expiry.
    world.sync()
    assert read(world, alice, KEY) == b"GGUF weights"
    page.goto(world.http.control_url + "/access")
    grant_row = page.locator("table tr", has_text="expires in")
    assert re.search(r"expires in 1h 59m|expires in 2h", grant_row.first.inner_text())
    shoot(page, "my-access-granted")

    # 6. carol revokes the grant from the active grants page; the very next read is denied.
    carol_page.goto(world.http.control_url + "/grants")
    alice_row = carol_page.locator("tbody tr", has_text="alice")
    assert alice_row.count() == 1
    shoot(carol_page, "active-grants")
    alice_row.locator("input[name=reason]").fill("evaluation finished")
    alice_row.get_by_role("button", name="Revoke").click()
    carol_page.wait_for_load_state()
    assert "revoked" in carol_page.locator(".flash-success").inner_text()
    world.sync()
    with pytest.raises(ClientError) as exc:
        read(world, alice, KEY)
    assert exc.value.response["Error"]["Code"] == "AccessDenied"


def test_approver_never_sees_own_request_in_inbox_and_can_cancel_it(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    world.person("dave", ("ml", "security"))  # may both request and approve models
    page = new_page(browser)
    page.goto(world.http.control_url + "/request?resource=models")
    sign_in(page, "dave")
    page.fill("#justification", "Reproduce the regression in last night's eval")
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_load_state()
    request_id = page.locator("tbody tr .mono").first.inner_text().strip()

    # Not in dave's own inbox, though he approves models; in carol's.
    page.goto(world.http.control_url + "/inbox")
    assert page.locator(f"article#{request_id}").count() == 0
    carol_page = new_page(browser)
    carol_page.goto(world.http.control_url + "/inbox")
    sign_in(carol_page, "carol")
    assert carol_page.locator(f"article#{request_id}").count() == 1

    page.goto(world.http.control_url + "/access")
    page.locator(f"tr#{request_id}").get_by_role("button", name="Cancel").click()
    page.wait_for_load_state()
    assert "cancelled" in page.locator(f"tr#{request_id}").inner_text().lower()
    carol_page.reload()
    assert carol_page.locator(f"article#{request_id}").count() == 0


def test_request_over_the_maximum_is_refused_with_the_reason(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    page = new_page(browser)
    page.goto(world.http.control_url + f"/request?resource=s3://{BUCKET}/models/&action=read")
    sign_in(page, "alice")
    # A hand-edited form (the menu offers nothing longer): the workflow still refuses it.
    page.locator("#duration").evaluate("el => { el.options[0].value = '9h'; el.selectedIndex = 0; }")
    page.fill("#justification", WHY)
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_load_state()
    assert "longer than the maximum of 8h" in page.locator(".flash-error").inner_text()
    assert page.locator("#justification").input_value() == WHY  # what she typed is kept


def test_form_without_the_csrf_token_is_refused(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    page = new_page(browser)
    page.goto(world.http.control_url + "/access")
    sign_in(page, "bob")
    form = {"resource": f"s3://{BUCKET}/models/", "actions": "read", "justification": WHY}
    # The browser's own cookies go along, as in a cross-site forgery: only the token is missing.
    missing = page.request.post(world.http.control_url + "/request", form=form, max_redirects=0)
    forged = page.request.post(
        world.http.control_url + "/request", form={**form, "csrf_token": "guessed"}, max_redirects=0
    )
    assert missing.status == 403 and forged.status == 403
    assert "security token" in missing.text()

    async def bobs_requests() -> int:
        store = await SqlStore.open(world.store_url)
        try:
            from proxy.store.workflow import WorkflowStore

            return len(await WorkflowStore(store).list_requests(requester="bob"))
        finally:
            await store.close()

    from support.world import run_sync

    assert run_sync(bobs_requests()) == 0

    # The same form with the token from the page goes through (bob is approved instantly).
    page.goto(world.http.control_url + f"/request?resource=s3://{BUCKET}/models/&action=read")
    page.fill("#justification", WHY)
    page.get_by_role("button", name="Get access now").click()
    page.wait_for_load_state()
    assert "Access granted" in page.locator(".flash-success").inner_text()
    assert run_sync(bobs_requests()) == 1


def test_screenshots_are_referenced_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in (
        "sign-in",
        "request-form",
        "my-access-pending",
        "inbox",
        "my-access-granted",
        "active-grants",
    ):
        assert f"docs/screenshots/{name}.png" in readme
        assert (SCREENSHOTS / f"{name}.png").is_file()
