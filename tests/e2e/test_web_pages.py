"""The web journey in a real browser (Debian's chromium driven by Playwright) against real gateways.

alice is denied by the gateway, follows the link from the 403 to the request form, submits it; carol
approves in her inbox; alice's boto3 read succeeds; the grant is revoked in the browser and the next read
is denied. Each page is saved under docs/screenshots/ for the README.
"""

from __future__ import annotations

import http.server
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError
from playwright.sync_api import sync_playwright
from support.access import api, denied_link, read
from support.browser import CHROMIUM, CHROMIUM_ARGS
from support.observed import eventually
from support.world import BUCKET, ROOT, Identity, World, running_world

from proxy.access.budgets import Budget, Usage
from proxy.demo import DEMO_POLICY
from proxy.store.sql import SqlStore

SCREENSHOTS = ROOT / "docs" / "screenshots"
KEY = "models/llama-3-8b-instruct.Q4_K_M.gguf"
MiB = 1024 * 1024
WHY = "Evaluate the new Q4_K_M quantisation against last week's baseline"

# The demo's policy (alice asks, carol approves, bob is instant), and a standing grant.
# Swept often, so a review period of seconds is noticed within the test's patience.
SWEPT_OFTEN = DEMO_POLICY.replace("[policy]\n", "[policy]\nsweep_interval_seconds = 0.2\n", 1)
POLICY = f"""
[web]
dev_login = true
{SWEPT_OFTEN}
[[policy.standing]]
principal = "inference-server"
resource = "models"
actions = ["read"]

[policy.resources.checkpoints]
description = "Fine-tuned checkpoints, reviewed every period (2s here, 90d in production)"
paths = ["s3://{BUCKET}/checkpoints/"]
review_every = "2s"
review_grace = "7d"
reviewers = ["security"]
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


def assert_inside_its_card(page: Any, element: Any) -> None:
    """On a laptop screen `element` lies within its card's padding, not past it nor scrolled out of it."""
    box = element.bounding_box()
    card = page.locator("section.card", has=element)
    right = card.evaluate(
        "c => c.getBoundingClientRect().right - parseFloat(getComputedStyle(c).paddingRight)"
    )
    assert box["x"] + box["width"] <= right + 0.5, (box, right)
    scrolled = card.evaluate("c => c.scrollLeft")
    assert scrolled == 0, f"the card is scrolled {scrolled} px sideways"


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
    durations = page.locator("#duration-choices option").evaluate_all("els => els.map(e => e.value)")
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
    # Next to it, what carol needs to decide: alice's groups, what lies under the prefix, her history.
    facts = card.locator(".approver-context li").all_inner_texts()
    assert "Groups: ml" in facts
    # (The count depends on what earlier tests of this module put under models/.)
    size = rf"Under s3://{BUCKET}/models/: \d+ objects?, [\d.]+ (?:B|KiB|MiB|GiB)"
    assert any(re.fullmatch(size, f) for f in facts), facts
    assert "Past grants here: none" in facts and "Already holds: nothing overlapping" in facts
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
    assert_inside_its_card(carol_page, alice_row.get_by_role("button", name="Revoke"))
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
    page.fill("#duration", "9h")
    page.fill("#justification", WHY)
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_load_state()
    assert "longer than the maximum of 8h" in page.locator(".flash-error").inner_text()
    assert page.locator("#justification").input_value() == WHY  # what she typed is kept
    assert page.locator("#duration").input_value() == "9h"  # and the duration she chose


def test_durations_are_free_text_parsed_as_the_cli_does(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    page = new_page(browser)
    page.goto(world.http.control_url + f"/request?resource=s3://{BUCKET}/models/free-text/&action=read")
    sign_in(page, "alice")
    suggestions = page.locator("#duration-choices option").evaluate_all("els => els.map(e => e.value)")
    assert "2h" in suggestions and suggestions[-1] == "8h"
    page.fill("#resource", f"s3://{BUCKET}/models/free-text/")
    page.fill("#duration", "90m")
    page.fill("#justification", WHY)
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_load_state()
    assert page.url.startswith(world.http.control_url + "/access"), page.locator("main").inner_text()
    assert "1h 30m" in page.locator("table tr", has_text="free-text").inner_text()


def test_an_unknown_resource_is_one_error_and_keeps_what_was_typed(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    page = new_page(browser)
    page.goto(world.http.control_url + f"/request?resource=s3://{BUCKET}/models/&action=read")
    sign_in(page, "alice")
    page.fill("#resource", "modelz")
    page.fill("#duration", "3h")
    page.fill("#justification", WHY)
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_load_state()
    messages = page.locator(".flash-error, .flash-warning, [role=alert]")
    assert messages.count() == 1, messages.all_inner_texts()
    assert "modelz" in messages.inner_text()
    assert page.locator("#resource").input_value() == "modelz"
    assert page.locator("#justification").input_value() == WHY
    assert page.locator("#duration").input_value() == "3h"


def test_the_inbox_fits_a_390_pixel_phone(
    world: World, browser: Any, people: dict[str, Identity], tmp_path: Path
) -> None:
    asker = new_page(browser)
    asker.goto(
        world.http.control_url + f"/request?resource=s3://{BUCKET}/models/phone/a/long/prefix/&action=read"
    )
    sign_in(asker, "alice")
    asker.fill("#resource", f"s3://{BUCKET}/models/phone/a/long/prefix/")
    asker.fill("#justification", WHY)
    asker.get_by_role("button", name="Submit request").click()
    asker.wait_for_load_state()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1).new_page()
    phone.goto(world.http.control_url + "/inbox")
    sign_in(phone, "carol")
    assert "phone/a/long/prefix" in phone.locator("main").inner_text()
    # Deciding it puts it in the table of recent decisions, the widest thing on the page.
    phone.locator("article", has_text="phone/a/long/prefix").get_by_role("button", name="Deny").click()
    phone.wait_for_load_state()
    assert phone.locator("table", has_text="phone/a/long/prefix").count() == 1
    phone.screenshot(path=str(tmp_path / "inbox-390px.png"), full_page=True)
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the inbox is {width} px wide on a 390 px screen"


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
        "my-access-budget",
        "reviews",
    ):
        assert f"docs/screenshots/{name}.png" in readme
        assert (SCREENSHOTS / f"{name}.png").is_file()


EVIL = ["/%09/evil.example", "/%0d/evil.example", "/%0a/evil.example", "/%5Cevil.example", "%5C/evil.example"]


class _Evil(http.server.BaseHTTPRequestHandler):
    """The phisher's site: records every visit."""

    visits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.visits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<h1>evil</h1>")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def evil_browser(browser: Any) -> Iterator[Any]:
    """Chromium whose DNS sends evil.example to a local server, so a wrong redirect is seen, not lost."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Evil)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rules = f"--host-resolver-rules=MAP evil.example 127.0.0.1:{server.server_address[1]}"
    other = browser.browser_type.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, rules])
    try:
        yield other
    finally:
        other.close()
        server.shutdown()
        thread.join()


def test_no_return_address_takes_the_browser_to_another_site(world: World, evil_browser: Any) -> None:
    dora = world.person("dora-redirect", ("ml",))
    grant = world.grant(dora, f"s3://{BUCKET}/models/", "read")
    page = new_page(evil_browser)
    origin = world.http.control_url
    _Evil.visits.clear()

    def lands_on_a_400_here(go: Callable[[], Any]) -> None:
        with page.expect_navigation(timeout=15_000):
            go()
        assert page.url.startswith(origin + "/"), page.url
        assert page.locator("h1").inner_text() == "Bad request", page.content()

    # The dev sign-in form, its return address tampered with (the browser sends it as it is).
    page.goto(origin + "/signin")
    page.locator("input[name=next]").evaluate("e => e.value = '/\\t/evil.example'")
    lands_on_a_400_here(lambda: page.locator("button.person[value='dora-redirect']").click())
    page.goto(origin + "/access")
    sign_in(page, "dora-redirect")
    # Signed in, /signin?next=... sends the browser straight on: it must be refused, not followed.
    for bad in EVIL:
        lands_on_a_400_here(lambda bad=bad: page.goto(origin + "/signin?next=" + bad))
    # The revoke form's return address: refused before the grant is revoked.
    page.goto(origin + "/access")
    page.locator(f"form[action='/grants/{grant.id}/revoke'] input[name=next]").evaluate(
        "e => e.value = '/\\\\evil.example'"
    )
    lands_on_a_400_here(lambda: page.get_by_role("button", name="Revoke").click())
    page.goto(origin + "/access")
    assert page.get_by_role("button", name="Revoke").count() == 1  # still active
    assert _Evil.visits == []


def test_extend_button_on_my_access_asks_for_more_time_and_the_approver_sees_it(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    alice, carol = people["alice"], people["carol"]
    created = api(
        world,
        world.api_token(alice),
        "POST",
        "/requests",
        {"resource": f"s3://{BUCKET}/models/extend/", "duration": "2h", "justification": WHY},
    )[1]
    grant = api(world, world.api_token(carol), "POST", f"/requests/{created['id']}/approve")[1]["grant"]

    page = new_page(browser)
    page.goto(world.http.control_url + "/access")
    sign_in(page, "alice")
    row = page.locator(f"tr#{grant['id']}")
    row.locator("summary", has_text="Extend").click()
    row.locator("input[name=duration]").fill("3h")
    row.locator("input[name=justification]").fill("the evaluation needs the weekend")
    shoot(page, "my-access-extend")
    assert_inside_its_card(page, row.get_by_role("button", name="Ask to extend"))
    row.get_by_role("button", name="Ask to extend").click()
    page.wait_for_load_state()
    assert "sent for approval" in page.locator(".flash-success").inner_text()
    assert f"extends {grant['id']}" in page.locator("table").nth(1).inner_text()

    carol_page = new_page(browser)
    carol_page.goto(world.http.control_url + "/inbox")
    sign_in(carol_page, "carol")
    # The extension's card (alice's other pending cards name the grant too, as access she already holds).
    card = carol_page.locator("article", has_text=f"{grant['id']}: starts where it ends")
    assert card.count() == 1

    # Over the maximum (2h held + 7h): one error, nothing sent.
    row = page.locator(f"tr#{grant['id']}")
    row.locator("summary", has_text="Extend").click()
    row.locator("input[name=duration]").fill("7h")
    row.get_by_role("button", name="Ask to extend").click()
    page.wait_for_load_state()
    assert "in all, longer than the maximum of 8h" in page.locator(".flash-error").inner_text()


def test_a_bundle_is_one_card_in_the_inbox_and_one_approval_grants_it_all(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    alice = people["alice"]
    resources = [f"s3://{BUCKET}/models/bundle/", f"s3://{BUCKET}/training-data/bundle-evals/"]
    body = {"resources": resources, "duration": "1h", "justification": WHY}
    created = api(world, world.api_token(alice), "POST", "/requests", body)[1]

    carol_page = new_page(browser)
    carol_page.goto(world.http.control_url + "/inbox")
    sign_in(carol_page, "carol")
    card = carol_page.locator(f"article#{created['id']}")
    text = card.inner_text()
    assert all(r in text for r in resources) and "granted together or not at all" in text
    assert carol_page.locator("article", has_text="bundle-evals").count() == 1  # one card, not two
    shoot(carol_page, "inbox-bundle")
    card.get_by_role("button", name="Approve").click()
    carol_page.wait_for_load_state()
    assert "alice has access for 1h" in carol_page.locator(".flash-success").inner_text()
    done = api(world, world.api_token(alice), "GET", f"/requests/{created['id']}")[1]
    assert done["status"] == "approved" and len(done["grant_ids"]) == 2


def test_a_budgeted_grant_shows_its_use_as_a_bar_on_my_access_and_active_grants(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    alice, carol = people["alice"], people["carol"]
    prefix = "models/budget-web/"
    world.upstream().put_object(Bucket=BUCKET, Key=prefix + "w.bin", Body=b"w" * 3 * MiB)
    grant = world.grant(
        alice, f"s3://{BUCKET}/{prefix}", "read", budget=Budget(max_bytes=4 * MiB, max_objects=2)
    )
    assert len(read(world, alice, prefix + "w.bin")) == 3 * MiB
    eventually(lambda: world.usage(grant) == Usage(3 * MiB, 1), what="the read settled in the ledger")

    def bars(page: Any) -> list[tuple[str | None, str | None]]:
        meters = page.locator(f"tr#{grant.id} meter.budget-bar")
        return [(m.get_attribute("value"), m.get_attribute("max")) for m in meters.all()]

    page = new_page(browser)
    page.goto(world.http.control_url + "/access")
    sign_in(page, "alice")
    assert bars(page) == [(str(3 * MiB), str(4 * MiB)), ("1", "2")]
    assert "3 MiB of 4 MiB, 1 of 2 objects" in page.locator(f"tr#{grant.id}").inner_text()
    page.locator(f"tr#{grant.id}").scroll_into_view_if_needed()
    shoot(page, "my-access-budget")

    approver = new_page(browser)
    approver.goto(world.http.control_url + "/grants")
    sign_in(approver, carol.name)
    assert bars(approver) == [(str(3 * MiB), str(4 * MiB)), ("1", "2")]
    assert "3 MiB of 4 MiB, 1 of 2 objects" in approver.locator(f"tr#{grant.id}").inner_text()


def test_a_reviewer_sees_the_holders_use_and_confirms_then_revokes_in_the_browser(
    world: World, browser: Any, people: dict[str, Identity]
) -> None:
    alice = people["alice"]
    key = "checkpoints/sft-run-7/step-12000.safetensors"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=b"c" * 3 * MiB)
    grant = world.grant(alice, f"s3://{BUCKET}/checkpoints/sft-run-7/", "read", ttl=None)
    assert len(read(world, alice, key)) == 3 * MiB

    page = new_page(browser)
    page.goto(world.http.control_url + "/reviews")
    sign_in(page, "carol")

    def card(use: str = "3.0 MiB read in 1 object") -> Any:
        page.goto(world.http.control_url + "/reviews")
        found = page.locator("article.request", has_text=grant.id)
        return found if found.count() and use in found.inner_text() else None

    review = eventually(card, what="the review with alice's use")
    text = review.inner_text()
    assert "alice holds checkpoints" in text and "last used" in text
    assert "security" in text
    shoot(page, "reviews")
    review.get_by_role("button", name="Confirm").click()
    page.wait_for_load_state()
    assert "confirmed until the next review" in page.locator(".flash-success").inner_text()
    assert len(read(world, alice, key)) == 3 * MiB

    # The holder sees the next review of her access, without buttons.
    mine = new_page(browser)
    mine.goto(world.http.control_url + "/reviews")
    sign_in(mine, "alice")

    def own_card() -> Any:
        mine.goto(world.http.control_url + "/reviews")
        found = mine.locator("article.request", has_text=grant.id)
        return found if found.count() else None

    own = eventually(own_card, what="the next review, on alice's page")
    assert "a reviewer (security) decides" in own.inner_text()
    assert own.get_by_role("button", name="Confirm").count() == 0

    # carol revokes it: alice's next read is refused.
    # The next period's use is the read since the confirmation only, not the grant's total (6 MiB).
    nxt = eventually(card, what="the next review, with only the read since the confirmation")
    assert "6.0 MiB" not in nxt.inner_text()
    nxt.get_by_role("button", name="Revoke").click()
    page.wait_for_load_state()
    assert "revoked" in page.locator(".flash-success").inner_text()
    with pytest.raises(ClientError):
        read(world, alice, key)
    history = page.locator("section.card", has_text="Recently decided").inner_text().lower()
    assert "confirmed" in history and "revoked" in history
