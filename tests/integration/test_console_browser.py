"""console.js in a real browser (Debian's Chromium via Playwright), under the console's
real Content-Security-Policy: times shown in the viewer's zone, the viewer's zone sent
with the time filters, progress on a slow form and no double submit, a confirmation
before revoking, and nothing on any page that the CSP has to block.

The pages run under the test stand-in for the sign-in guard (console_harness.py), with
the real SecurityHeaders middleware in front, over the session's real stack."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from conftest import RunningStack
from console_harness import Console
from playwright.sync_api import Browser, BrowserContext, Route, expect, sync_playwright
from test_console_pages import console as console  # the pages' module fixture, reused

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# Chromium stays on 127.0.0.1: no background services, every other name unresolvable.
ARGS = [
    "--no-sandbox",  # tests run as root, where Chromium's own sandbox cannot start
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--dns-prefetch-disable",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
ZONE = "Asia/Tokyo"  # UTC+9, no daylight saving: a fixed, visible offset
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def tab(browser: Browser, console: Console) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A browser context in Tokyo, signed in as the admin; collects console errors
    (a CSP violation is one) and any request to a host other than the console."""
    context = browser.new_context(
        timezone_id=ZONE,
        locale="en-GB",
        viewport={"width": 1366, "height": 768},
        extra_http_headers={"X-Test-Role": "admin"},
    )
    problems: list[str] = []

    def outside(route: Route) -> None:
        problems.append(f"request outside the console: {route.request.url}")
        route.abort()

    context.route(lambda url: not url.startswith(console.base_url), outside)
    context.on("console", lambda m: m.type == "error" and problems.append(m.text))
    context.on("weberror", lambda e: problems.append(str(e.error)))
    try:
        yield context, problems
    finally:
        context.close()


def test_times_are_shown_in_the_viewers_zone(
    tab: tuple[BrowserContext, list[str]], console: Console, stack: RunningStack
) -> None:
    context, problems = tab
    decision_id = stack.invoke("calculator", "add", {"a": 3, "b": 4}).json()["decision_id"]
    page = context.new_page()
    page.goto(f"{console.base_url}/admin/decisions/{decision_id}")
    recorded = page.locator("dl.facts time").first
    stored = recorded.get_attribute("datetime")
    assert stored is not None
    expect(recorded).to_contain_text("GMT+9")
    assert recorded.get_attribute("title") == stored  # the stored UTC value, on hover
    local = datetime.fromisoformat(stored).astimezone(ZoneInfo(ZONE))
    expect(recorded).to_contain_text(local.strftime("%H:%M:%S"))
    expect(page.locator("footer .viewer-zone")).to_have_text(ZONE)
    assert problems == []


def test_the_time_filter_is_read_in_the_viewers_zone(
    tab: tuple[BrowserContext, list[str]], console: Console, stack: RunningStack
) -> None:
    context, problems = tab
    caller = f"tokyo-{int(time.time() * 1000)}"
    decision_id = stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=stack.token(caller))
    decision_id = decision_id.json()["error"]["decision_id"]
    page = context.new_page()
    page.goto(f"{console.base_url}/admin/decisions")
    # Ten minutes ago on the viewer's wall clock; read as UTC it would be 9 h off.
    since = (datetime.now(ZoneInfo(ZONE)) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S")
    page.fill("input[name=caller]", caller)
    page.fill("input[name=since]", since)
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**tz=Asia%2FTokyo**")
    expect(page.locator(f"a[href='/admin/decisions/{decision_id}']")).to_be_visible()
    assert problems == []


def test_a_slow_form_shows_progress_and_cannot_be_sent_twice(
    tab: tuple[BrowserContext, list[str]], console: Console
) -> None:
    context, problems = tab
    page = context.new_page()
    page.goto(f"{console.base_url}/admin/policy")
    # Stand in for a slow server: after console.js has seen each submit, note whether it
    # let it through, and keep the page where it is so the test can look at it.
    page.evaluate(
        """() => {
            window.__sent = [];
            window.addEventListener("submit", (event) => {
                window.__sent.push(!event.defaultPrevented);
                event.preventDefault();
            });
        }"""
    )
    button = page.locator("form[action='/admin/policy/eval'] button[type=submit]")
    button.click()
    page.wait_for_timeout(600)  # past the 300 ms after which the bar appears
    button.click(force=True)  # an impatient second click
    form = page.locator("form[action='/admin/policy/eval']")
    expect(form).to_have_attribute("aria-busy", "true")
    expect(button).to_have_text("Evaluating…")
    expect(form.locator("progress.working")).to_have_count(1)
    assert page.evaluate("() => window.__sent") == [True, False]  # the second never left
    assert problems == []


def test_revoking_asks_first(tab: tuple[BrowserContext, list[str]], console: Console) -> None:
    context, problems = tab
    page = context.new_page()
    page.goto(f"{console.base_url}/admin/agents/sleepy")
    questions: list[str] = []

    def answer_no(dialog: object) -> None:
        questions.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()  # type: ignore[attr-defined]

    page.once("dialog", answer_no)
    page.click("form[action='/admin/agents/sleepy/revoke'] button[type=submit]")
    assert questions
    assert "Revoke sleepy?" in questions[0]
    expect(page).to_have_url(f"{console.base_url}/admin/agents/sleepy")
    expect(page.locator("h1 .badge")).not_to_have_text("revoked")
    assert problems == []


@pytest.mark.parametrize(
    "path",
    [
        "/admin/decisions",
        "/admin/agents",
        "/admin/agents/xss",
        "/admin/approvals",
        "/admin/policy",
        "/admin/tools",
    ],
)
def test_no_page_needs_anything_the_csp_blocks(
    tab: tuple[BrowserContext, list[str]], console: Console, path: str
) -> None:
    context, problems = tab
    page = context.new_page()
    response = page.goto(console.base_url + path)
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_load_state("load")
    assert page.evaluate("() => document.styleSheets.length") >= 1  # console.css applied
    # console.js ran (it rewrote the footer's zone), under the CSP.
    expect(page.locator("footer .viewer-zone")).to_have_text(ZONE)
    assert page.evaluate("() => window.__xss === undefined")
    assert problems == []
