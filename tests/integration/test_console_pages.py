"""The console's pages over real parts: decisions a real gateway made, a real catalog of
signed manifests (one of them hostile), the real OPA and runner of a running stack.

The pages sit behind a stand-in for the sign-in guard (tests/integration/console_harness.py)
that sets the user and the CSRF token as the real one does."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, TEST_CALLER, RunningStack, world_traversable_tmpdir
from console_harness import (
    CSRF,
    USERS,
    Console,
    Services,
    assert_inert,
    audit_bodies,
    find_form,
    parse,
    serve_console,
)

from gateway.audit import AuditStore
from gateway.call_approval_store import FILE_NAME as CALL_APPROVALS_FILE
from gateway.shadow import ShadowCounts
from regate import crypto
from regate.manifest import sign_manifest

pytestmark = pytest.mark.integration

SCRIPT = "<script>alert('pwned')</script>"
BREAKOUT = '"><img src=x onerror=alert(1)>'
HOSTILE = SCRIPT + BREAKOUT


def hostile_manifest() -> dict[str, Any]:
    """A publisher's manifest whose every free-text field tries to become markup."""
    doc = json.loads((REPO / "examples" / "agents" / "calculator" / "manifest.json").read_text())
    doc["agent_id"] = "xss"
    doc["description"] = HOSTILE
    doc["tools"][0]["description"] = f"Adds. {HOSTILE}"
    doc["tools"][0]["input_schema"]["properties"]["a"]["description"] = BREAKOUT
    doc["tools"][0]["permissions"] = ["net:none", 'fs:read:/data"><script>x()</script>']
    return doc


@pytest.fixture(scope="module")
def console(stack: RunningStack) -> Iterator[Console]:
    root = world_traversable_tmpdir("regate-console-")
    manifests = root / "manifests"
    shutil.copytree(stack.settings.manifests.dir, manifests)
    publisher = crypto.load_private_key(
        stack.settings.manifests.publishers_jwks.with_name("publisher.private.jwk")
    )
    (manifests / "xss.jws").write_text(sign_manifest(hostile_manifest(), publisher) + "\n")
    services = Services(
        # The console's own catalog: nothing auto-approved, so there is something to approve.
        manifests=dataclasses.replace(stack.settings.manifests, dir=manifests, auto_approve=False),
        state_dir=root,
        audit_db=stack.settings.gateway.audit_db,
        opa_url=stack.settings.opa.url.base_url,
        runner_uds=stack.settings.runner.url.uds,
        policies_dir=stack.settings.opa.policies_dir,
        # The gateway's own store of parked calls: decided here, redeemed there.
        call_approvals_db=stack.settings.gateway.state_dir / CALL_APPROVALS_FILE,
    )
    try:
        with serve_console(services) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- every page ----------------------------------------------------------------------

PAGES = ["/admin/decisions", "/admin/agents", "/admin/agents/xss", "/admin/approvals",
         "/admin/policy", "/admin/tools"]  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_every_page_renders_inert_with_the_user_and_a_logout_form(
    console: Console, path: str, role: str
) -> None:
    response = console.get(path, role)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert_inert(response.text)
    assert USERS[role].name in response.text
    logout = find_form(response.text, "/logout")
    assert ("csrf_token", CSRF) in logout
    # Viewers get no form that changes anything: only the logout.
    posting = parse(response.text).post_actions
    if role == "viewer":
        assert posting == ["/logout"], posting


def test_static_files_are_served(console: Console) -> None:
    js = console.get("/admin/static/console.js", role=None)
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert "time[datetime]" in js.text
    assert console.get("/admin/static/console.css", role=None).status_code == 200
    assert console.get("/admin/static/nope.js", role=None).status_code == 404


def test_the_front_page_is_the_decisions(console: Console) -> None:
    response = console.get("/admin", tab="ignored")  # unknown parameters do not break it
    assert response.status_code == 200
    assert 'aria-current="page">Decisions' in response.text
    assert f'<meta name="csrf-token" content="{CSRF}">' in response.text


# --- decisions -----------------------------------------------------------------------


def test_decisions_list_filters_and_links_to_the_detail(
    console: Console, stack: RunningStack
) -> None:
    caller = f"pages-{uuid.uuid4().hex[:8]}"
    denied = stack.invoke("calculator", "add", {"a": 1, "b": 2}, token=stack.token(caller))
    denied_id = denied.json()["error"]["decision_id"]

    page = console.get("/admin/decisions", caller=caller)
    assert page.status_code == 200
    assert f"/admin/decisions/{denied_id}" in page.text
    assert "policy_denied" in page.text
    rows = page.text.count('<a href="/admin/decisions/')
    assert rows == 1  # only this caller's decision

    nothing = console.get("/admin/decisions", caller=caller, outcome="allow")
    assert "No decisions match these filters" in nothing.text


def test_decision_detail_shows_input_reasons_revision_and_receipt(
    console: Console, stack: RunningStack
) -> None:
    allowed = stack.invoke("calculator", "add", {"a": 20, "b": 22}).json()["decision_id"]
    response = console.get(f"/admin/decisions/{allowed}")
    assert response.status_code == 200
    html = response.text
    revision = json.loads((REPO / "policies" / ".manifest").read_text())["revision"]
    assert revision in html
    assert "granted" in html  # the policy's reason
    assert "ran ok" in html  # the receipt
    [receipt] = [r for r in stack.audit_rows(allowed) if r["kind"] == "receipt"]
    assert receipt["output_sha256"] in html
    assert "&#34;a&#34;: 20" in html  # the input, as the policy saw it (escaped JSON)
    assert f"/admin/policy?from={allowed}" in html


def test_hostile_arguments_and_callers_render_as_text(
    console: Console, stack: RunningStack
) -> None:
    # Denied by policy, so the input with the argument is recorded (and nothing runs).
    caller = "mallory" + BREAKOUT
    response = stack.invoke("ops", "shell", {"command": HOSTILE}, token=stack.token(caller))
    decision_id = response.json()["error"]["decision_id"]

    for path, params in [
        ("/admin/decisions", {"caller": caller}),
        (f"/admin/decisions/{decision_id}", {}),
    ]:
        html = console.get(path, **params).text
        assert_inert(html)
        assert SCRIPT not in html
        assert BREAKOUT not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html  # there, as text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"outcome": "maybe"}, "must be one of allow, deny, require_approval, error"),
        ({"since": "2026-11-22T10:00", "until": "2026-11-22T09:00", "tz": "UTC"}, "earlier"),
        ({"tz": "Nowhere/Atlantis"}, "IANA time zone"),
    ],
)
def test_bad_filters_say_what_is_wrong_and_keep_the_form(
    console: Console, params: dict[str, str], message: str
) -> None:
    response = console.get("/admin/decisions", **params)
    assert response.status_code == 400
    assert message in response.text
    assert find_form(response.text, "/admin/decisions")  # still there to fix


def test_time_filter_reads_the_viewers_zone(console: Console, stack: RunningStack) -> None:
    caller = f"zone-{uuid.uuid4().hex[:8]}"
    stack.invoke("calculator", "add", {"a": 1, "b": 2}, token=stack.token(caller))
    # 14 hours ahead of UTC: "now" there is far in UTC's future, so since=now-1h (Kiritimati
    # time) read as UTC would exclude the call; read in the viewer's zone it includes it.
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    local = datetime.now(ZoneInfo("Pacific/Kiritimati")) - timedelta(hours=1)
    since = local.strftime("%Y-%m-%dT%H:%M:%S")
    found = console.get("/admin/decisions", caller=caller, since=since, tz="Pacific/Kiritimati")
    assert found.text.count('<a href="/admin/decisions/') == 1
    as_utc = console.get("/admin/decisions", caller=caller, since=since, tz="UTC")
    assert as_utc.text.count('<a href="/admin/decisions/') == 0


def test_pages_of_decisions_follow_on(console: Console, stack: RunningStack) -> None:
    caller = f"pager-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        stack.invoke("calculator", "add", {"a": n, "b": 1}, token=stack.token(caller))
    first = console.get("/admin/decisions", caller=caller, limit="2")
    assert first.text.count('<a href="/admin/decisions/') == 2
    older = next(
        a["href"]
        for tag, a in parse(first.text).tags
        if tag == "a" and "before=" in (a.get("href") or "")
    )
    assert older is not None
    second = console.get(older)
    assert second.text.count('<a href="/admin/decisions/') == 1
    assert "Newest" in second.text


def test_a_decision_id_opens_that_decision(console: Console, stack: RunningStack) -> None:
    decision_id = stack.invoke("calculator", "add", {"a": 1, "b": 1}).json()["decision_id"]
    with console.client() as client:
        jump = client.get("/admin/decisions", params={"id": f" {decision_id} "})
        assert jump.status_code == 303
        assert jump.headers["location"] == f"/admin/decisions/{decision_id}"
        bad = client.get("/admin/decisions", params={"id": "../../etc"})
    assert bad.status_code == 400
    assert "letters, digits and" in bad.text


def test_unknown_decision_is_a_404_page(console: Console) -> None:
    response = console.get(f"/admin/decisions/{uuid.uuid4()}")
    assert response.status_code == 404
    assert "decision_not_found" in response.text
    assert_inert(response.text)


def test_an_empty_log_says_where_decisions_come_from(console: Console, tmp_path: Path) -> None:
    empty = dataclasses.replace(console.services, audit_db=tmp_path / "none.db")
    with serve_console(empty) as fresh:
        html = fresh.get("/admin/decisions").text
    assert "No decisions recorded yet" in html
    assert "/v1/invoke" in html


# --- agents --------------------------------------------------------------------------


def test_agents_list_shows_states_and_refused_manifests(console: Console) -> None:
    html = console.get("/admin/agents").text
    assert '<a href="/admin/agents/calculator">calculator</a>' in html
    assert "waiting for review" in html  # nothing is auto-approved in this catalog
    assert "tampered.jws" in html  # refused, with why
    assert "foreign.jws" in html


def test_a_hostile_manifest_renders_inert(console: Console) -> None:
    html = console.get("/admin/agents/xss").text
    assert_inert(html)
    assert SCRIPT not in html
    assert BREAKOUT not in html
    assert "Adds. &lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    # The permission checkbox carries the hostile string inside its attribute, quoted.
    fields = find_form(html, "/admin/agents/xss/approve")
    assert ("perm", 'add:fs:read:/data"><script>x()</script>') in fields


def test_admin_approves_with_a_subset_of_permissions_then_revokes(console: Console) -> None:
    page = "/admin/agents/xss"
    fields = find_form(console.get(page).text, f"{page}/approve")
    assert ("csrf_token", CSRF) in fields
    keep = [v for k, v in fields if k == "perm" and v != 'add:fs:read:/data"><script>x()</script>']
    response = console.submit(page, f"{page}/approve", perm=keep, reason="reviewed <b>ok</b>")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/agents/xss?done=approve"

    html = console.get(response.headers["location"]).text
    assert f"Approved by {USERS['admin'].actor}" in html
    assert "reviewed &lt;b&gt;ok&lt;/b&gt;" in html
    assert f"{page}/approve" not in html  # approved: nothing left to approve
    admin = audit_bodies(console.audit_db, "admin")
    approval = [r for r in admin if r["action"] == "approve" and r["agent_id"] == "xss"][-1]
    assert approval["actor"] == USERS["admin"].actor
    assert approval["outcome"] == "done"
    assert approval["permissions"]["add"] == ["net:none"]  # the unticked one is not approved

    revoked = console.submit(page, f"{page}/revoke", reason="incident 42")
    assert revoked.status_code == 303
    html = console.get(revoked.headers["location"]).text
    assert f"Revoked by {USERS['admin'].actor}" in html
    assert "incident 42" in html


def test_approving_a_manifest_other_than_the_one_shown_is_refused(console: Console) -> None:
    page = "/admin/agents/ops"
    response = console.submit(page, f"{page}/approve", manifest_sha256="0" * 64)
    assert response.status_code == 409
    assert "review it again before approving" in response.text
    assert_inert(response.text)
    assert "pending" in console.get(page).text


def test_a_crafted_done_link_claims_nothing(console: Console) -> None:
    html = console.get("/admin/agents/calculator", done="approve").text
    assert "Approved by" not in html  # calculator is pending: the page says what is true


def test_viewers_see_no_actions(console: Console) -> None:
    html = console.get("/admin/agents/ops", role="viewer").text
    assert "/admin/agents/ops/approve" not in html
    assert "/admin/agents/ops/revoke" not in html
    assert "need the admin role" in html


def test_unknown_agent_is_a_404_page(console: Console) -> None:
    response = console.get("/admin/agents/nobody")
    assert response.status_code == 404
    assert "agent_not_found" in response.text


# --- policy --------------------------------------------------------------------------


def test_policy_page_shows_status_and_a_prefilled_dry_run(
    console: Console, stack: RunningStack
) -> None:
    decision_id = stack.invoke("calculator", "add", {"a": 5, "b": 6}).json()["decision_id"]
    html = console.get("/admin/policy", **{"from": decision_id}).text
    revision = json.loads((REPO / "policies" / ".manifest").read_text())["revision"]
    assert revision in html
    assert "defined" in html
    fields = dict(find_form(html, "/admin/policy/eval"))
    document = json.loads(fields["input"])
    assert document["caller"]["sub"] == TEST_CALLER
    assert document["arguments"] == {"a": 5, "b": 6}

    result = console.submit(f"/admin/policy?from={decision_id}", "/admin/policy/eval")
    assert result.status_code == 200
    assert "badge-allow" in result.text
    assert "granted" in result.text

    document["target"]["agent_id"] = "ops"
    document["tool"]["name"] = "shell"
    denied = console.submit("/admin/policy", "/admin/policy/eval", input=json.dumps(document))
    assert "badge-deny" in denied.text
    assert "no_grant" in denied.text


@pytest.mark.parametrize(
    ("text", "status", "message"),
    [
        ("{not json", 400, "not valid JSON"),
        ('{"input_version": 1}', 422, "is a required property"),
        ("", 422, "paste a policy input"),
    ],
)
def test_dry_run_errors_keep_the_text_and_say_why(
    console: Console, text: str, status: int, message: str
) -> None:
    response = console.submit("/admin/policy", "/admin/policy/eval", input=text)
    assert response.status_code == status
    assert message in response.text
    assert dict(find_form(response.text, "/admin/policy/eval"))["input"] == text


def test_dry_run_of_hostile_input_renders_inert(console: Console) -> None:
    response = console.submit("/admin/policy", "/admin/policy/eval", input=HOSTILE)
    assert response.status_code == 400
    assert_inert(response.text)
    assert SCRIPT not in response.text


def test_opa_and_runner_down_are_clear_states(console: Console, tmp_path: Path) -> None:
    from conftest import free_port

    down = dataclasses.replace(
        console.services,
        opa_url=f"http://127.0.0.1:{free_port()}",
        runner_uds=tmp_path / "no-runner.sock",
    )
    with serve_console(down) as broken:
        policy = broken.get("/admin/policy")
        tools = broken.get("/admin/tools")
    assert policy.status_code == 200
    assert "OPA cannot be reached" in policy.text
    assert tools.status_code == 200
    assert "The sandbox runner cannot be reached" in tools.text


def test_shadow_policy_counts_and_a_disagreement_on_the_decision(
    console: Console, tmp_path: Path
) -> None:
    # A decision the shadow policy disagreed with, written by the real audit store.
    record = {
        "decision_id": "sh-1",
        "outcome": "allow",
        "status": 200,
        "code": "allowed",
        "caller": {"sub": "alice", "iss": "https://issuer"},
        "target": {"agent_id": "calculator"},
        "tool": "add",
        "policy": {"outcome": "allow", "reasons": [], "policy_revision": "r1"},
        "shadow": {
            "outcome": "deny",
            "reasons": [{"code": "too_risky", "message": SCRIPT}],
            "policy_revision": "r2",
            "agrees": False,
        },
    }

    async def write() -> None:
        store = AuditStore(tmp_path / "audit.db")
        await store.append("decision", "sh-1", record)
        await store.close()

    asyncio.run(write())
    counts = ShadowCounts(sampled=4, agreed=3, disagreed=1)
    counts.transitions["allow->deny"] = 1
    shadowed = dataclasses.replace(
        console.services, audit_db=tmp_path / "audit.db", shadow_counts=counts
    )
    with serve_console(shadowed) as running:
        policy = running.get("/admin/policy").text
        detail = running.get("/admin/decisions/sh-1").text
    assert "25.0% of calls" in policy
    assert "<code>allow-&gt;deny</code> 1" in policy
    assert "disagrees with the enforced decision" in detail
    assert "too_risky" in detail
    assert_inert(detail)
    assert SCRIPT not in detail
    assert "No shadow policy is configured" in console.get("/admin/policy").text


# --- tools and approvals -------------------------------------------------------------


def test_tools_page_shows_the_runner_state_and_counts(
    console: Console, stack: RunningStack
) -> None:
    stack.invoke("calculator", "add", {"a": 1, "b": 1})
    successes, _ = stack.tool_counts("calculator.add")
    html = console.get("/admin/tools").text
    assert "bwrap" in html
    assert "<code>calculator.add</code>" in html
    row = html.split("<code>calculator.add</code>", 1)[1].split("</tr>", 1)[0]
    assert "state-ready" in row
    assert f"<td>{successes}</td>" in row


def park(stack: RunningStack, path: str, approval_id: str | None = None) -> httpx.Response:
    """A janitor.purge call: its permission is `destructive`, so policy wants approval."""
    headers = {"Authorization": f"Bearer {stack.token()}"}
    if approval_id:
        headers["Regate-Approval"] = approval_id
    with stack.client() as client:
        return client.post(
            "/v1/invoke/janitor/purge", json={"arguments": {"path": path}}, headers=headers
        )


def test_a_parked_call_is_approved_on_the_page_then_runs_once(
    console: Console, stack: RunningStack
) -> None:
    parked = park(stack, "/scratch/" + BREAKOUT)
    assert parked.status_code == 202, parked.text
    approval_id = parked.json()["approval_id"]

    html = console.get("/admin/approvals").text
    assert f'id="approval-{approval_id}"' in html
    assert_inert(html)
    assert BREAKOUT not in html  # the argument, escaped
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "destructive" in html  # the policy's reason for asking

    action = f"/admin/approvals/{approval_id}/approve"
    assert ("csrf_token", CSRF) in find_form(html, action)
    decided = console.submit("/admin/approvals", action, reason="checked with the owner")
    assert decided.status_code == 303, decided.text
    page = console.get(decided.headers["location"]).text
    assert f"Approved by {USERS['admin'].actor}" in page
    assert action not in page  # decided: no form left for it
    records = audit_bodies(console.audit_db, "call_approval")
    mine = [r for r in records if r.get("approval_id") == approval_id]
    assert mine
    assert mine[-1]["actor"] == USERS["admin"].actor

    before = stack.tool_counts("janitor.purge")
    ran = park(stack, "/scratch/" + BREAKOUT, approval_id=approval_id)
    assert ran.status_code == 200, ran.text
    assert stack.tool_counts("janitor.purge")[0] == before[0] + 1
    again = park(stack, "/scratch/" + BREAKOUT, approval_id=approval_id)
    assert again.status_code == 409  # an approval runs its call once


def test_a_denied_call_does_not_run(console: Console, stack: RunningStack) -> None:
    approval_id = park(stack, "/scratch/deny-me").json()["approval_id"]
    action = f"/admin/approvals/{approval_id}/deny"
    decided = console.submit("/admin/approvals", action, reason="not during the freeze")
    assert decided.status_code == 303
    assert "Denied by" in console.get(decided.headers["location"]).text
    refused = park(stack, "/scratch/deny-me", approval_id=approval_id)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "approval_denied"
    assert "not during the freeze" in refused.text  # the caller is told why


def test_deciding_needs_a_reason_and_a_pending_call(console: Console, stack: RunningStack) -> None:
    approval_id = park(stack, "/scratch/reasonless").json()["approval_id"]
    action = f"/admin/approvals/{approval_id}/approve"
    response = console.submit("/admin/approvals", action, reason="")
    assert response.status_code == 400
    assert "give a reason" in response.text
    assert action in response.text  # still pending, still decidable
    console.submit("/admin/approvals", f"/admin/approvals/{approval_id}/deny", reason="no")
    with console.client() as client:
        late = client.post(
            action,
            content=f"csrf_token={CSRF}&reason=too+late",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert late.status_code == 409
    assert "not pending" in late.text


def test_viewers_see_parked_calls_but_no_forms(console: Console, stack: RunningStack) -> None:
    approval_id = park(stack, "/scratch/viewer").json()["approval_id"]
    html = console.get("/admin/approvals", role="viewer").text
    assert f'id="approval-{approval_id}"' in html
    assert f"/admin/approvals/{approval_id}/approve" not in html
    assert "need the admin role" in html


@pytest.mark.parametrize("status", ["all", "approved", "denied", "expired", "used"])
def test_every_status_tab_renders(console: Console, status: str) -> None:
    response = console.get("/admin/approvals", status=status)
    assert response.status_code == 200
    assert_inert(response.text)


def test_a_bad_status_and_a_crafted_done_link(console: Console) -> None:
    bad = console.get("/admin/approvals", status="maybe")
    assert bad.status_code == 400
    crafted = console.get("/admin/approvals", done=str(uuid.uuid4()))
    assert crafted.status_code == 200
    assert "Approved by" not in crafted.text


def test_approvals_empty_and_not_available_states(console: Console, tmp_path: Path) -> None:
    empty = dataclasses.replace(console.services, call_approvals_db=tmp_path / "none.sqlite3")
    with serve_console(empty) as fresh:
        assert "No call is waiting for approval" in fresh.get("/admin/approvals").text
    off = dataclasses.replace(console.services, call_approvals_db=None)
    with serve_console(off) as disabled:
        assert "not available" in disabled.get("/admin/approvals").text
