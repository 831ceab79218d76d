"""A real console for tests: PAGE_ROUTES under uvicorn on loopback, over real services.

Until the sign-in layer wraps the pages, `TestSignIn` stands in for it the way its
contract says: it sets `request.state.user` and `request.state.csrf_token` before a
handler runs. The role comes from the `X-Test-Role` header (`admin` or `viewer`).
Everything else is real: the catalog over signed manifests, the SQLite audit store,
the gateway's OPA and runner clients pointed at a running stack.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import uvicorn
from conftest import free_port
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.approvals import ApprovalStore
from gateway.audit import AuditStore
from gateway.call_approval_store import CallApprovalStore
from gateway.call_approvals import CallApprovals
from gateway.catalog import Catalog
from gateway.console.pages import PAGE_ROUTES
from gateway.console.routes import STATIC_DIR
from gateway.console.security import SecurityHeaders
from gateway.decision_log import SqliteDecisionLog
from gateway.policy import PolicyClient
from gateway.policy_dry_run import InputSchema
from gateway.runner_client import RunnerClient
from gateway.shadow import ShadowCounts, ShadowPolicy
from gateway.sidecar_http import sidecar_session
from regate.middleware import RequestIdMiddleware
from regate.settings import Address, ManifestSettings

CSRF = "test-csrf-token-0123456789"


@dataclass(frozen=True)
class TestUser:
    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        return f"oidc:{self.name}"


USERS = {"admin": TestUser("alice@example.test", "admin"), "viewer": TestUser("vic", "viewer")}


class TestSignIn:
    """Sets what the real guard sets; refuses a request with no role, as it would."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/admin")
            and not scope["path"].startswith("/admin/static")
        ):
            headers = dict(scope["headers"])
            user = USERS.get(headers.get(b"x-test-role", b"").decode())
            if user is None:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"sign in"})
                return
            scope["state"]["user"] = user
            scope["state"]["csrf_token"] = CSRF
        await self.app(scope, receive, send)


@dataclass
class Services:
    manifests: ManifestSettings
    state_dir: Path
    audit_db: Path  # where the decisions are read from
    opa_url: str
    runner_uds: Path | None
    policies_dir: Path | None
    # A shadow policy with these counts (as if it had been sampling); None: none configured.
    shadow_counts: ShadowCounts | None = None
    # The gateway's parked calls (its state_dir's store, shared across processes as
    # between replicas); None: call approvals not served.
    call_approvals_db: Path | None = None


def build_app(services: Services, own_dir: Path) -> Starlette:
    """The pages over real services; the catalog keeps its records in `own_dir` (one
    audit store per file: two consoles never share one)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        audit = AuditStore(own_dir / "audit.db")
        approvals = ApprovalStore(own_dir / "approvals.db")
        catalog = Catalog(services.manifests, approvals, audit)
        await catalog.start()
        opa = aiohttp.ClientSession()  # decisions and the shadow's questions
        runner_http = sidecar_session(Address(uds=services.runner_uds or Path("/nonexistent")))
        call_store = None
        call_approvals = None
        if services.call_approvals_db is not None:
            call_store = CallApprovalStore(services.call_approvals_db)
            call_approvals = CallApprovals(call_store, audit, ttl_s=300, max_pending_per_caller=100)
        shadow = None
        if services.shadow_counts is not None:
            shadow = ShadowPolicy(
                opa, services.opa_url, sample_rate=0.25, max_wait_s=0.5, timeout_s=2.0
            )
            shadow.counts = services.shadow_counts
        try:
            yield {
                "call_approvals": call_approvals,
                "shadow": shadow,
                "catalog": catalog,
                "decisions": SqliteDecisionLog(services.audit_db),
                "policy": PolicyClient(opa, services.opa_url, timeout_s=2.0),
                "runner": RunnerClient(runner_http, "http://runner"),
                "input_schema": InputSchema.load(services.policies_dir),
            }
        finally:
            if call_store is not None:
                await call_store.close()
            await opa.close()
            await runner_http.close()
            await approvals.close()
            await audit.close()

    static = Mount("/admin/static", StaticFiles(directory=STATIC_DIR))
    app = Starlette(routes=[*PAGE_ROUTES, static], lifespan=lifespan)
    app.router.redirect_slashes = False
    # The admin listener's own security headers (CSP, no-store, ...) in front, as in the app.
    return RequestIdMiddleware(SecurityHeaders(TestSignIn(app)))  # type: ignore[return-value]


@dataclass
class Console:
    base_url: str
    services: Services
    audit_db: Path  # where the console's own catalog audits admin actions

    def client(self, role: str | None = "admin") -> httpx.Client:
        headers = {"X-Test-Role": role} if role else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def get(self, path: str, role: str | None = "admin", **params: Any) -> httpx.Response:
        with self.client(role) as client:
            return client.get(path, params=params or None)

    def submit(self, page: str, action: str, role: str = "admin", **changes: Any) -> httpx.Response:
        """Fill in the form posting to `action` as a browser would: its fields as
        rendered on `page`, with `changes` (None unticks/removes a field)."""
        html = self.get(page, role).text
        form = find_form(html, action)
        fields = [(k, v) for k, v in form if k not in changes]
        for name, value in changes.items():
            if value is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                fields.append((name, item))
        with self.client(role) as client:
            return client.post(
                action,
                content=urlencode(fields),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )


@contextmanager
def serve_console(services: Services) -> Iterator[Console]:
    port = free_port()
    own_dir = Path(tempfile.mkdtemp(prefix="console-", dir=services.state_dir))
    config = uvicorn.Config(
        build_app(services, own_dir),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test console did not start")
        time.sleep(0.02)
    try:
        yield Console(f"http://127.0.0.1:{port}", services, own_dir / "audit.db")
    finally:
        server.should_exit = True
        thread.join(10)


# --- reading the HTML the way a browser would --------------------------------------


class Page(HTMLParser):
    """Every start tag with its attributes, inline script text, and the forms."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self.forms: list[tuple[str, list[tuple[str, str]]]] = []
        self.post_actions: list[str] = []  # where the forms that change something post
        self._in_script = False
        self._in_textarea: str | None = None
        self._textarea: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self._in_script = tag == "script"
        if tag == "form":
            self.forms.append((attributes.get("action") or "", []))
            if (attributes.get("method") or "get").lower() == "post":
                self.post_actions.append(attributes.get("action") or "")
        elif tag == "input" and self.forms:
            kind = attributes.get("type") or "text"
            name = attributes.get("name")
            if name and (kind not in ("checkbox", "radio") or "checked" in attributes):
                self.forms[-1][1].append((name, attributes.get("value") or ""))
        elif tag == "textarea" and self.forms:
            self._in_textarea = attributes.get("name")
            self._textarea = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag == "textarea" and self._in_textarea and self.forms:
            self.forms[-1][1].append((self._in_textarea, "".join(self._textarea)))
            self._in_textarea = None

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)
        if self._in_textarea:
            self._textarea.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def find_form(html: str, action: str) -> list[tuple[str, str]]:
    for form_action, fields in parse(html).forms:
        if form_action == action:
            return fields
    raise AssertionError(f"no form posting to {action} on the page")


def assert_inert(html: str) -> None:
    """Nothing on the page runs but console.js: no inline script, no event handler
    attribute, no javascript: URL, no inline style (the CSP would block them anyway)."""
    page = parse(html)
    assert page.script_text == [], page.script_text
    for tag, attributes in page.tags:
        if tag == "script":
            assert attributes.get("src") == "/admin/static/console.js", attributes
        for name, value in attributes.items():
            assert not name.startswith("on"), (tag, name, value)
            assert name != "style", (tag, value)
            if name in ("href", "src", "action"):
                assert not (value or "").strip().lower().startswith("javascript:"), (tag, value)
        assert tag not in ("img", "iframe", "object", "embed", "svg"), (tag, attributes)


def wait_until(check: Any, what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def audit_bodies(path: Path, kind: str) -> list[Mapping[str, Any]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT body FROM audit_log WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    finally:
        conn.close()
    return [json.loads(body) for (body,) in rows]
