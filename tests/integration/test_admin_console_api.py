"""The admin API the console reads: decisions, policy status and dry run, tool health.

A real stack (opa, bwrap runner, gateway with its admin listener); calls go through
/v1/invoke, and the admin API must find them in the audit store."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from conftest import REPO, TEST_CALLER, RunningStack

pytestmark = pytest.mark.integration

NEW_ENDPOINTS = [
    ("GET", "/admin/api/decisions"),
    ("GET", f"/admin/api/decisions/{uuid.uuid4()}"),
    ("GET", "/admin/api/policy"),
    ("POST", "/admin/api/policy/eval"),
    ("GET", "/admin/api/tools"),
]


def admin(
    stack: RunningStack, method: str, path: str, *, body: Any = None, auth: bool = True
) -> httpx.Response:
    assert stack.settings.admin is not None
    headers = {}
    if auth:
        headers["Authorization"] = f"Bearer {stack.settings.admin.token_file.read_text().strip()}"
    return httpx.request(
        method,
        f"{stack.settings.admin.listen.base_url}{path}",
        json=body,
        headers=headers,
        timeout=30,
    )


def policy_input(stack: RunningStack, caller: str, agent: str, tool: str) -> dict[str, Any]:
    """The input the gateway sent OPA for a real call, re-aimed at caller/agent/tool."""
    decision_id = stack.invoke("calculator", "add", {"a": 1, "b": 2}).json()["decision_id"]
    document: dict[str, Any] = stack.audit_rows(decision_id)[0]["input"]
    document["caller"]["sub"] = caller
    document["target"]["agent_id"] = agent
    document["tool"]["name"] = tool
    return document


@pytest.mark.parametrize(("method", "path"), NEW_ENDPOINTS)
def test_every_new_endpoint_needs_the_admin_token(
    stack: RunningStack, method: str, path: str
) -> None:
    response = admin(stack, method, path, auth=False)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_token"


def test_decisions_made_through_the_gateway_are_found_and_detailed(stack: RunningStack) -> None:
    caller = f"console-{uuid.uuid4().hex[:8]}"  # no grant: its calls are denied
    allowed = stack.invoke("calculator", "add", {"a": 2, "b": 40}).json()["decision_id"]
    denied = stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=stack.token(caller))
    denied_id = denied.json()["error"]["decision_id"]

    listing = admin(stack, "GET", "/admin/api/decisions", body=None)
    assert listing.status_code == 200, listing.text
    mine = admin(stack, "GET", f"/admin/api/decisions?caller={caller}").json()
    assert [d["decision_id"] for d in mine["decisions"]] == [denied_id]
    assert mine["decisions"][0]["outcome"] == "deny"
    assert mine["next_before"] is None

    by_tool = admin(
        stack, "GET", f"/admin/api/decisions?caller={TEST_CALLER}&agent=calculator&outcome=allow"
    ).json()["decisions"]
    row = next(d for d in by_tool if d["decision_id"] == allowed)
    assert row["ran_ok"] is True
    assert row["tool"] == "add"

    detail = admin(stack, "GET", f"/admin/api/decisions/{allowed}")
    assert detail.status_code == 200, detail.text
    trail = detail.json()
    decision, receipt = trail["decision"]["body"], trail["receipt"]["body"]
    assert decision["input"]["arguments"] == {"a": 2, "b": 40}
    assert decision["policy"]["reasons"][0]["code"] == "granted"
    assert decision["policy"]["policy_revision"] == revision()
    assert receipt["ok"] is True
    assert receipt["output_sha256"]
    assert trail["receipt"]["seq"] > trail["decision"]["seq"]
    # The detail is the stored record: the same bytes the audit chain hashes.
    assert [r["kind"] for r in stack.audit_rows(allowed)] == ["decision", "receipt"]
    assert admin(stack, "GET", f"/admin/api/decisions/{denied_id}").json()["receipt"] is None


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("outcome=maybe", 400, "bad_request"),
        ("since=yesterday", 400, "bad_request"),
        ("limit=1000", 400, "bad_request"),
        ("colour=red", 400, "bad_request"),
    ],
)
def test_bad_decision_filters_are_400(
    stack: RunningStack, query: str, status: int, code: str
) -> None:
    response = admin(stack, "GET", f"/admin/api/decisions?{query}")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_unknown_decision_is_404(stack: RunningStack) -> None:
    response = admin(stack, "GET", f"/admin/api/decisions/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "decision_not_found"
    bad = admin(stack, "GET", "/admin/api/decisions/not_an%20id")
    assert bad.status_code in (400, 404)


def revision() -> str:
    return str(json.loads((REPO / "policies" / ".manifest").read_text())["revision"])


def test_policy_status_names_the_bundle_revision_opa_serves(stack: RunningStack) -> None:
    status = admin(stack, "GET", "/admin/api/policy").json()
    assert status["reachable"] is True
    assert status["bundle_active"] is True
    assert status["decision_defined"] is True
    assert status["revision"] == revision()
    assert status["opa_version"]


@pytest.mark.parametrize(
    ("caller", "agent", "tool", "outcome", "reason"),
    [
        (TEST_CALLER, "calculator", "add", "allow", "granted"),
        (TEST_CALLER, "ops", "shell", "deny", "no_grant"),
        ("stranger", "calculator", "add", "deny", "no_grant"),
    ],
)
def test_policy_dry_run_evaluates_the_loaded_policy(
    stack: RunningStack, caller: str, agent: str, tool: str, outcome: str, reason: str
) -> None:
    document = policy_input(stack, caller, agent, tool)
    before = stack.tool_counts("calculator.add")
    response = admin(stack, "POST", "/admin/api/policy/eval", body={"input": document})
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert decision["outcome"] == outcome
    assert decision["reasons"][0]["code"] == reason
    assert decision["policy_revision"] == revision()
    assert stack.tool_counts("calculator.add") == before  # a dry run runs nothing


def test_dry_run_input_must_match_the_input_schema(stack: RunningStack) -> None:
    document = policy_input(stack, TEST_CALLER, "calculator", "add")
    del document["caller"]["iss"]
    response = admin(stack, "POST", "/admin/api/policy/eval", body={"input": document})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_policy_input"
    assert error["path"] == "/caller"
    assert "iss" in error["message"]
    missing = admin(stack, "POST", "/admin/api/policy/eval", body={})
    assert missing.status_code == 400
    assert "input" in missing.json()["error"]["message"]


def test_tool_health_comes_from_the_runner(stack: RunningStack) -> None:
    response = admin(stack, "GET", "/admin/api/tools")
    assert response.status_code == 200, response.text
    body = response.json()
    with stack.runner_client() as runner:
        direct = runner.get("/v1/tools").json()
    assert body["summary"] == direct["summary"]
    assert body["sandbox"]["backend"] == "bwrap"
    names = {t["name"] for t in body["tools"]}
    assert "calculator.add" in names
    add = next(t for t in body["tools"] if t["name"] == "calculator.add")
    assert add["state"] == "ready"
    assert add["successes"] >= 1
