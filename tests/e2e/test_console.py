"""The admin console in a real browser: Debian's Chromium driven by Playwright, signing
in through a real OpenID Connect provider (tests/e2e/oidc/), against a real stack.

The browser talks to 127.0.0.1 only: Chromium's background services are off, every
other host name resolves to nothing, and a route on each context aborts and records
any request for another host; the test asserts that list stays empty.

Screenshots of the main pages are written to $REGATE_SCREENSHOTS when it is set (the
ones in docs/img/ come from `REGATE_SCREENSHOTS=docs/img pytest tests/e2e/test_console.py`),
else to a temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from oidc_provider import ALICE, NOBODY, VICTOR, ConsoleStack, User, console_stack
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    Route,
    expect,
    sync_playwright,
)

from regate import crypto
from regate.manifest import sign_manifest

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# Keep Chromium from calling home: no background fetches, updates, sync, safe
# browsing lists, metrics or DNS prefetching; any name but 127.0.0.1 fails to resolve.
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests run as root, where Chromium's own sandbox cannot start
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-extensions",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--no-first-run",
    "--no-pings",
    "--dns-prefetch-disable",
    "--safebrowsing-disable-auto-update",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# A loaded CI machine can take more than Playwright's default 5 s to render a page.
expect.set_options(timeout=20_000)
XSS_MARK = "regate-xss-probe"
XSS_DESCRIPTION = (
    f"<script>alert('{XSS_MARK}')</script>"
    f"<img src=x onerror=\"alert('{XSS_MARK}')\">"
    f"Adds numbers.</textarea></pre><script>window.__xss='{XSS_MARK}'</script>"
)


@dataclass
class Console:
    cs: ConsoleStack
    browser: Browser
    shots: Path
    decision_id: str
    approval_id: str  # a call to janitor.purge, parked until an admin approves it
    blocked: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.cs.console_url

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """The admin API with the operator's token (what a script would do)."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.request(
                method,
                path,
                json=body,
                headers={"Authorization": f"Bearer {self.cs.admin_token}"},
            )

    def agent_state(self, agent_id: str) -> str:
        response = self.api("GET", f"/admin/api/agents/{agent_id}")
        assert response.status_code == 200, response.text
        state: str = response.json()["state"]
        return state

    def context(self) -> BrowserContext:
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(30_000)
        context.route("**/*", self._only_loopback)
        context.on("page", self._watch)
        return context

    def _only_loopback(self, route: Route) -> None:
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _watch(self, page: Page) -> None:
        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)

    def shot(self, page: Page, name: str) -> None:
        page.screenshot(path=str(self.shots / f"console-{name}.png"), full_page=False)


def sign_in(console: Console, page: Page, user: User, path: str = "/admin/decisions") -> None:
    """Open a console page, get sent to sign in, sign in at the provider, come back."""
    page.goto(console.url + path)
    expect(page).to_have_url(f"{console.url}/login?next={urllib.parse.quote(path, safe='')}")
    page.click("#sign-in")
    page.wait_for_url(f"{console.cs.issuer}/interaction/**")
    page.fill("input[name=login]", user.login)
    page.fill("input[name=password]", user.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: url.startswith(console.url))


def publish(cs: ConsoleStack, doc: dict[str, Any]) -> None:
    """Sign a manifest with the trusted publisher key and drop it where the gateway looks."""
    settings = cs.running.settings
    jwks = settings.manifests.publishers_jwks
    key = crypto.load_private_key(jwks.with_name("publisher.private.jwk"))
    target = settings.manifests.dir / f"{doc['agent_id']}.jws"
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(sign_manifest(doc, key) + "\n")
    temporary.replace(target)


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (it installs Debian's chromium)")
    wanted = os.environ.get("REGATE_SCREENSHOTS")
    shots = Path(wanted) if wanted else Path(tempfile.mkdtemp(prefix="regate-shots-"))
    shots.mkdir(parents=True, exist_ok=True)
    with console_stack("regate-console-e2e-", auto_approve=False) as cs, sync_playwright() as pw:
        decision_id, approval_id = prepare(cs)
        browser = launch(pw)
        try:
            yield Console(cs, browser, shots, decision_id, approval_id)
        finally:
            browser.close()
            if not wanted:
                shutil.rmtree(shots, ignore_errors=True)


def launch(pw: Playwright) -> Browser:
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    # Debian's build, not a browser Playwright downloaded.
    debian = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=True)
    assert browser.version in debian.stdout, (browser.version, debian.stdout)
    return browser


def prepare(cs: ConsoleStack) -> tuple[str, str]:
    """What an operator would have: calculator approved and called once; janitor approved
    and one call to it parked for approval; an agent whose tool description is hostile
    markup; the others pending."""
    running = cs.running
    with httpx.Client(base_url=cs.console_url, timeout=30) as client:
        headers = {"Authorization": f"Bearer {cs.admin_token}"}
        for agent in ("calculator", "janitor"):
            approved = client.post(f"/admin/api/agents/{agent}/approve", json={}, headers=headers)
            assert approved.status_code == 200, approved.text
    call = running.invoke("calculator", "add", {"a": 2, "b": 40})
    assert call.status_code == 200, call.text
    parked = running.invoke("janitor", "purge", {"path": "/scratch/old"})
    assert parked.status_code == 202, parked.text
    doc = json.loads((running.root / "agents" / "calculator" / "manifest.json").read_text())
    doc["agent_id"] = "xss"
    doc["tools"][0]["description"] = XSS_DESCRIPTION
    publish(cs, doc)
    return call.json()["decision_id"], parked.json()["approval_id"]


@pytest.fixture
def context(console: Console) -> Iterator[BrowserContext]:
    context = console.context()
    try:
        yield context
    finally:
        context.close()
    assert console.blocked == [], f"the browser tried to leave 127.0.0.1: {console.blocked}"


def test_admin_signs_in_and_sees_a_decision(console: Console, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(console.url + "/admin/decisions")
    expect(page.locator("#sign-in")).to_be_visible()
    console.shot(page, "login")
    sign_in(console, page, ALICE)
    expect(page).to_have_url(console.url + "/admin/decisions")
    row = page.locator(f"a[href='/admin/decisions/{console.decision_id}']")
    expect(row).to_be_visible()
    console.shot(page, "decisions")
    row.click()
    expect(page).to_have_url(f"{console.url}/admin/decisions/{console.decision_id}")
    expect(page.locator("main")).to_contain_text(console.decision_id)
    expect(page.locator("main")).to_contain_text("test-client")
    console.shot(page, "decision")
    for name in ("policy", "tools"):
        page.goto(f"{console.url}/admin/{name}")
        expect(page.locator("h1")).to_be_visible()
        console.shot(page, name)


def test_admin_approves_a_pending_agent(console: Console, context: BrowserContext) -> None:
    assert console.agent_state("ops") == "pending"
    page = context.new_page()
    sign_in(console, page, ALICE, "/admin/agents")
    expect(page.locator("main")).to_contain_text("ops")
    console.shot(page, "agents")
    page.goto(console.url + "/admin/agents/ops")
    console.shot(page, "agent-pending")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("Approved by")
    assert console.agent_state("ops") == "approved"
    approval = console.api("GET", "/admin/api/agents/ops").json()["approval"]
    assert "alice" in approval["by"]


def test_admin_approves_a_pending_call(console: Console, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(console, page, ALICE, "/admin/approvals")
    pending = page.locator(f"#approval-{console.approval_id}")
    expect(pending).to_contain_text("janitor")
    expect(pending).to_contain_text("/scratch/old")
    console.shot(page, "approvals")
    approve = pending.locator("form[action$='/approve']")
    approve.locator("input[name=reason]").fill("cleanup ticket 42")
    approve.get_by_role("button", name="Approve this call").click()
    expect(page.get_by_role("status")).to_contain_text("Approved by")
    record = console.api("GET", f"/admin/api/call-approvals/{console.approval_id}").json()
    assert record["status"] == "approved"
    assert "alice" in record["decided_by"]
    # The caller retries with the approval: now the call runs.
    with console.cs.running.client() as client:
        retried = client.post(
            "/v1/invoke/janitor/purge",
            json={"arguments": {"path": "/scratch/old"}},
            headers={
                "Authorization": f"Bearer {console.cs.running.token()}",
                "Regate-Approval": console.approval_id,
            },
        )
    assert retried.status_code == 200, retried.text
    assert retried.json()["ok"] is True


def test_manifest_markup_renders_inert(console: Console, context: BrowserContext) -> None:
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    sign_in(console, page, ALICE, "/admin/agents/xss")
    main = page.locator("main")
    expect(main).to_contain_text(f"<script>alert('{XSS_MARK}')</script>")
    console.shot(page, "agent-hostile-description")
    # Shown as text: no element was made from it, nothing ran, no CSP report needed.
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("main script").count() == 0
    assert page.locator("main img").count() == 0
    assert page.evaluate("() => Array.from(document.scripts).map(s => s.src || s.textContent)") == [
        f"{console.url}/admin/static/console.js"
    ]
    assert not [d for d in console.dialogs if XSS_MARK in d]
    assert not [m for m in messages if XSS_MARK in m or "Content Security Policy" in m]


def test_forged_post_without_the_csrf_token_is_rejected(
    console: Console, context: BrowserContext
) -> None:
    assert console.agent_state("sleepy") == "pending"
    page = context.new_page()
    sign_in(console, page, ALICE, "/admin/agents/sleepy")
    # What a forged form would send: the session cookie rides along, the token cannot.
    with page.expect_navigation():
        page.evaluate(
            """() => {
                const form = document.createElement('form');
                form.method = 'post';
                form.action = '/admin/agents/sleepy/approve';
                document.body.appendChild(form);
                form.submit();
            }"""
        )
    expect(page.locator("#refusal")).to_contain_text("CSRF token")
    assert console.agent_state("sleepy") == "pending"


@contextmanager
def attacker_site(target: str) -> Iterator[str]:
    """Another origin on 127.0.0.1 serving a page that auto-submits a form to `target`."""
    page = (
        "<!doctype html><title>win a prize</title>"
        f'<form id="f" method="post" action="{target}"><input name="reason" value="pwned"></form>'
        "<script>document.getElementById('f').submit()</script>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_cross_site_form_post_is_rejected(console: Console, context: BrowserContext) -> None:
    """The classic CSRF: a signed-in admin visits another site, which posts to the console.
    SameSite=Lax does not stop it here (every 127.0.0.1 port is the same site): the
    Origin check and the missing token do."""
    assert console.agent_state("sneaky") == "pending"
    page = context.new_page()
    sign_in(console, page, ALICE, "/admin/agents/sneaky")
    with attacker_site(f"{console.url}/admin/agents/sneaky/approve") as evil:
        page.goto(evil)
        page.wait_for_url(f"{console.url}/admin/agents/sneaky/approve")
        expect(page.locator("#refusal")).to_contain_text("CSRF token")
    assert console.agent_state("sneaky") == "pending"


def test_viewer_is_refused_the_approve_action(console: Console, context: BrowserContext) -> None:
    assert console.agent_state("hostile") == "pending"
    page = context.new_page()
    sign_in(console, page, VICTOR, "/admin/agents/hostile")
    expect(page.locator("main")).to_contain_text("hostile")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    # The viewer posts the approve form anyway, with a valid token of their own.
    with page.expect_navigation():
        page.evaluate(
            """() => {
                const form = document.createElement('form');
                form.method = 'post';
                form.action = '/admin/agents/hostile/approve';
                const token = document.createElement('input');
                token.name = 'csrf_token';
                token.value = document.querySelector('input[name=csrf_token]').value;
                form.appendChild(token);
                document.body.appendChild(form);
                form.submit();
            }"""
        )
    expect(page.locator("h1")).to_have_text("Only admins can do this")
    console.shot(page, "refused-viewer")
    assert console.agent_state("hostile") == "pending"


def test_user_in_no_console_group_is_refused(console: Console, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(console, page, NOBODY)
    expect(page.locator("h1")).to_have_text("No access to the Regate console")
    expect(page.locator("#refusal")).to_contain_text("not in a group")
    console.shot(page, "refused-no-group")
    page.goto(console.url + "/admin/decisions")
    expect(page.locator("#sign-in")).to_be_visible()


def test_sign_out(console: Console, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(console, page, ALICE)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(console.url + "/logged-out")
    expect(page.locator("h1")).to_have_text("You are signed out")
    assert not [c for c in context.cookies() if c["name"] == "regate_session"]
    page.goto(console.url + "/admin/decisions")
    expect(page.locator("#sign-in")).to_be_visible()
