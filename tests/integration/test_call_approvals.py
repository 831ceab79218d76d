"""Approvals of calls end to end: park (202), poll, an admin decides, the replay runs once.

The tool is `janitor.purge` (tests/fixtures/agents/janitor): its manifest declares
`fs:delete:/scratch`, which policies/regate/risk/data.json rates `destructive`, so
policy answers `require_approval` for every call of a granted caller. Whether the
tool ran is read from the runner's own success count, and every step is checked
against the audit log.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import httpx2
import pytest
from conftest import RunningStack, start_stack, stop_stack
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.integration

TOOL = "janitor.purge"
APPROVAL = "regate.dev/approval_id"


def admin(stack: RunningStack) -> httpx.Client:
    settings = stack.settings.admin
    assert settings is not None
    token = settings.token_file.read_text().strip()
    return httpx.Client(
        base_url=f"http://{settings.listen.host}:{settings.listen.port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def purge(
    stack: RunningStack,
    arguments: dict[str, Any],
    *,
    sub: str = "test-client",
    approval_id: str | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.token(sub)}"}
    if approval_id is not None:
        headers["Regate-Approval"] = approval_id
    with stack.client() as client:
        return client.post(
            "/v1/invoke/janitor/purge", json={"arguments": arguments}, headers=headers
        )


def park(stack: RunningStack, arguments: dict[str, Any], sub: str = "test-client") -> str:
    response = purge(stack, arguments, sub=sub)
    assert response.status_code == 202, response.text
    approval_id: str = response.json()["approval_id"]
    return approval_id


def poll(stack: RunningStack, approval_id: str, sub: str = "test-client") -> httpx.Response:
    with stack.client() as client:
        return client.get(
            f"/v1/approvals/{approval_id}",
            headers={"Authorization": f"Bearer {stack.token(sub)}"},
        )


def decide(stack: RunningStack, approval_id: str, verdict: str, reason: str) -> httpx.Response:
    with admin(stack) as client:
        return client.post(
            f"/admin/api/call-approvals/{approval_id}/{verdict}", json={"reason": reason}
        )


def runs(stack: RunningStack) -> int:
    return stack.tool_counts(TOOL)[0]


def history(stack: RunningStack, approval_id: str) -> list[dict[str, Any]]:
    """The approval's own audit records, oldest first."""
    return [r for r in stack.audit_rows(approval_id) if r["kind"] == "call_approval"]


def decision(stack: RunningStack, decision_id: str) -> dict[str, Any]:
    (row,) = [r for r in stack.audit_rows(decision_id) if r["kind"] == "decision"]
    return row


# --- the whole flow ------------------------------------------------------------------


def test_park_poll_approve_replay_runs_once(stack: RunningStack) -> None:
    arguments = {"path": "/scratch/old", "token": "tok-secret-value"}
    before = runs(stack)

    parked = purge(stack, arguments)

    assert parked.status_code == 202, parked.text
    body = parked.json()
    approval_id = body["approval_id"]
    assert body["status"] == "pending"
    assert {"decision_id", "expires_at", "reasons"} <= set(body)
    assert [r["code"] for r in body["reasons"]] == ["approval_required"]
    assert parked.headers["location"] == f"/v1/approvals/{approval_id}"
    assert runs(stack) == before  # parked, not run
    record = decision(stack, body["decision_id"])
    assert (record["outcome"], record["status"], record["code"]) == (
        "require_approval",
        202,
        "approval_pending",
    )
    assert record["approval_id"] == approval_id
    assert record["input"]["arguments"]["token"] == "[redacted]"

    status = poll(stack, approval_id)
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "pending"
    assert status.json()["reason"] is None
    assert status.json()["expires_at"] == body["expires_at"]

    # The admin sees it pending, with the masked arguments and the policy's reasons.
    with admin(stack) as client:
        pending = client.get("/admin/api/call-approvals", params={"status": "pending"})
        shown = client.get(f"/admin/api/call-approvals/{approval_id}").json()
    assert approval_id in [a["approval_id"] for a in pending.json()["approvals"]]
    assert shown["arguments"] == {"path": "/scratch/old", "token": "[redacted]"}
    assert shown["caller"]["sub"] == "test-client"
    assert shown["target"]["agent_id"] == "janitor"
    assert [r["code"] for r in shown["reasons"]] == ["approval_required"]

    early = purge(stack, arguments, approval_id=approval_id)
    assert early.status_code == 409, early.text
    assert early.json()["error"]["code"] == "approval_pending"

    approved = decide(stack, approval_id, "approve", "cleanup ticket OPS-12")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["decided_by"] == "admin-token"
    assert poll(stack, approval_id).json()["reason"] == "cleanup ticket OPS-12"

    replay = purge(stack, arguments, approval_id=approval_id)

    assert replay.status_code == 200, replay.text
    assert replay.json()["result"] == {"would_purge": "/scratch/old"}
    assert runs(stack) == before + 1
    replayed = decision(stack, replay.json()["decision_id"])
    assert (replayed["outcome"], replayed["code"]) == ("allow", "approved_call")
    assert replayed["approval_id"] == approval_id
    assert replayed["policy"]["outcome"] == "require_approval"  # asked again, same answer
    assert [r["kind"] for r in stack.audit_rows(replay.json()["decision_id"])] == [
        "decision",
        "receipt",
    ]
    assert poll(stack, approval_id).json()["status"] == "used"

    again = purge(stack, arguments, approval_id=approval_id)

    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "approval_used"
    assert runs(stack) == before + 1
    assert decision(stack, again.json()["error"]["decision_id"])["code"] == "approval_used"

    events = history(stack, approval_id)
    assert [(e["event"], e["actor"]) for e in events] == [
        ("parked", "test-client"),
        ("approved", "admin-token"),
        ("used", "test-client"),
    ]
    assert events[1]["reason"] == "cleanup ticket OPS-12"
    assert events[2]["decision_id"] == replay.json()["decision_id"]
    assert all(e["arguments_sha256"] == events[0]["arguments_sha256"] for e in events)
    everything = json.dumps([stack.audit_rows(approval_id), record, replayed])
    assert "tok-secret-value" not in everything


def test_a_denied_call_never_runs(stack: RunningStack) -> None:
    arguments = {"path": "/scratch/precious"}
    before = runs(stack)
    approval_id = park(stack, arguments)

    missing = decide(stack, approval_id, "deny", "  ")
    assert missing.status_code == 400, missing.text
    assert "reason" in missing.json()["error"]["message"]

    denied = decide(stack, approval_id, "deny", "not during the freeze")
    assert denied.status_code == 200, denied.text
    assert denied.json()["status"] == "denied"
    status = poll(stack, approval_id).json()
    assert (status["status"], status["reason"]) == ("denied", "not during the freeze")

    replay = purge(stack, arguments, approval_id=approval_id)

    assert replay.status_code == 403, replay.text
    error = replay.json()["error"]
    assert error["code"] == "approval_denied"
    assert error["reason"] == "not during the freeze"
    assert runs(stack) == before
    late = decide(stack, approval_id, "approve", "changed my mind")
    assert late.status_code == 409, late.text
    assert late.json()["error"]["code"] == "approval_not_pending"
    assert [(e["event"], e["actor"], e.get("reason")) for e in history(stack, approval_id)] == [
        ("parked", "test-client", None),
        ("denied", "admin-token", "not during the freeze"),
    ]


def test_another_caller_cannot_see_or_spend_an_approval(stack: RunningStack) -> None:
    arguments = {"path": "/scratch/mine"}
    approval_id = park(stack, arguments)
    assert decide(stack, approval_id, "approve", "ok").status_code == 200
    before = runs(stack)

    theirs = poll(stack, approval_id, sub="test-other")
    unknown = poll(stack, str(uuid.uuid4()), sub="test-other")
    spent = purge(stack, arguments, sub="test-other", approval_id=approval_id)

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert theirs.json()["error"]["code"] == "approval_not_found"
    assert spent.status_code == 404, spent.text
    assert spent.json()["error"]["code"] == "approval_not_found"
    assert runs(stack) == before
    assert poll(stack, approval_id).json()["status"] == "approved"  # still the owner's
    with stack.client() as anonymous:
        assert anonymous.get(f"/v1/approvals/{approval_id}").status_code == 401


def test_a_replay_with_other_arguments_is_refused(stack: RunningStack) -> None:
    approval_id = park(stack, {"path": "/scratch/a"})
    assert decide(stack, approval_id, "approve", "only /scratch/a").status_code == 200
    before = runs(stack)

    other = purge(stack, {"path": "/scratch"}, approval_id=approval_id)

    assert other.status_code == 403, other.text
    error = other.json()["error"]
    assert error["code"] == "approval_mismatch"
    assert error["mismatched"] == ["arguments"]
    assert "/scratch/a" not in error["message"]
    assert runs(stack) == before
    # The approval is untouched: the approved call still runs.
    assert purge(stack, {"path": "/scratch/a"}, approval_id=approval_id).status_code == 200
    assert runs(stack) == before + 1


def test_concurrent_replays_run_the_call_once(stack: RunningStack) -> None:
    arguments = {"path": "/scratch/race"}
    approval_id = park(stack, arguments)
    assert decide(stack, approval_id, "approve", "race test").status_code == 200
    before = runs(stack)
    token = stack.token()

    async def replays(n: int) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token}", "Regate-Approval": approval_id}
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/invoke/janitor/purge", json={"arguments": arguments}, headers=headers
                    )
                    for _ in range(n)
                )
            )

    responses = asyncio.run(replays(8))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 7, [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "approval_used"
    }
    assert runs(stack) == before + 1
    assert [e["event"] for e in history(stack, approval_id)] == ["parked", "approved", "used"]


@pytest.mark.parametrize("value", ["not-an-id", "'; DROP TABLE call_approvals; --", "1" * 300])
def test_a_malformed_approval_id_is_a_clear_400(stack: RunningStack, value: str) -> None:
    response = purge(stack, {"path": "/scratch/x"}, approval_id=value)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert "approval_id" in error["message"]
    assert decision(stack, error["decision_id"])["status"] == 400


def test_an_unknown_approval_id_is_a_404(stack: RunningStack) -> None:
    response = purge(stack, {"path": "/scratch/x"}, approval_id=str(uuid.uuid4()))

    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "approval_not_found"


def test_an_approval_is_not_needed_where_policy_allows(stack: RunningStack) -> None:
    # An approval id sent with a call that policy allows outright is not looked at.
    with stack.client() as client:
        answer = client.post(
            "/v1/invoke/calculator/add",
            json={"arguments": {"a": 1, "b": 2}},
            headers={
                "Authorization": f"Bearer {stack.token()}",
                "Regate-Approval": str(uuid.uuid4()),
            },
        )
    assert answer.status_code == 200, answer.text
    assert decision(stack, answer.json()["decision_id"])["approval_id"] is None


# --- the admin API's refusals ----------------------------------------------------------


def test_admin_api_refusals(stack: RunningStack) -> None:
    with admin(stack) as client:
        bad_status = client.get("/admin/api/call-approvals", params={"status": "maybe"})
        unknown = client.get(f"/admin/api/call-approvals/{uuid.uuid4()}")
        unknown_field = client.post(
            f"/admin/api/call-approvals/{uuid.uuid4()}/approve", json={"reason": "x", "why": 1}
        )
    with httpx.Client(base_url=str(client.base_url), timeout=30) as anonymous:
        no_token = anonymous.get("/admin/api/call-approvals")

    assert (bad_status.status_code, bad_status.json()["error"]["code"]) == (400, "bad_request")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "approval_not_found")
    assert unknown_field.status_code == 400
    assert no_token.status_code == 401


# --- MCP -------------------------------------------------------------------------------


def test_mcp_call_is_parked_then_replayed_with_meta(stack: RunningStack) -> None:
    arguments = {"path": "/scratch/mcp"}
    before = runs(stack)

    async def main() -> tuple[Any, Any, Any]:
        headers = {"Authorization": f"Bearer {stack.token()}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(f"{stack.base_url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = {t.name for t in (await session.list_tools()).tools}
            parked = await session.call_tool(TOOL, arguments)
            approval_id = parked.structured_content["approval"]["approval_id"]  # type: ignore[index]
            approved = await asyncio.to_thread(decide, stack, approval_id, "approve", "mcp ok")
            assert approved.status_code == 200, approved.text
            replay = await session.call_tool(TOOL, arguments, meta={APPROVAL: approval_id})
            return listed, parked, replay

    listed, parked, replay = asyncio.run(main())

    assert TOOL in listed  # callable, through an approval
    assert parked.is_error is True
    approval = parked.structured_content["approval"]
    assert approval["status"] == "pending"
    assert parked.meta[APPROVAL] == approval["approval_id"]
    assert approval["approval_id"] in parked.content[0].text
    assert replay.is_error is False, replay
    assert replay.structured_content == {"would_purge": "/scratch/mcp"}
    assert runs(stack) == before + 1
    record = decision(stack, parked.meta["regate.dev/decision_id"])
    assert record["input"]["request"]["path"] == "/mcp"
    assert record["outcome"] == "require_approval"


# --- expiry ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brief_stack() -> Iterator[RunningStack]:
    """A stack whose approvals expire three seconds after parking."""
    running = start_stack("regate-approvals-", extra_config="\n[call_approvals]\nttl_s = 3\n")
    try:
        yield running
    finally:
        stop_stack(running)


def wait_until_past(moment: str) -> None:
    """Sleep until the gateway's clock is past `moment` (bounded: at most 10 s)."""
    deadline = time.monotonic() + 10
    while datetime.now(UTC) <= datetime.fromisoformat(moment) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.05)


def test_an_expired_approval_is_a_deny(brief_stack: RunningStack) -> None:
    stack = brief_stack
    arguments = {"path": "/scratch/late"}
    parked = purge(stack, arguments)
    assert parked.status_code == 202, parked.text
    approval_id = parked.json()["approval_id"]
    before = runs(stack)

    wait_until_past(parked.json()["expires_at"])

    assert poll(stack, approval_id).json()["status"] == "expired"
    late = decide(stack, approval_id, "approve", "too late")
    assert late.status_code == 409, late.text
    assert late.json()["error"]["status"] == "expired"
    replay = purge(stack, arguments, approval_id=approval_id)
    assert replay.status_code == 403, replay.text
    assert replay.json()["error"]["code"] == "approval_expired"
    assert runs(stack) == before
    events = history(stack, approval_id)
    assert [(e["event"], e["actor"]) for e in events] == [
        ("parked", "test-client"),
        ("expired", "regate"),
    ]
    assert events[1]["was"] == "pending"


def test_an_approved_call_not_replayed_in_time_expires(brief_stack: RunningStack) -> None:
    stack = brief_stack
    arguments = {"path": "/scratch/slow"}
    parked = purge(stack, arguments)
    approval_id = parked.json()["approval_id"]
    assert decide(stack, approval_id, "approve", "quick").status_code == 200

    wait_until_past(parked.json()["expires_at"])
    replay = purge(stack, arguments, approval_id=approval_id)

    assert replay.status_code == 403, replay.text
    assert replay.json()["error"]["code"] == "approval_expired"
    assert [e["event"] for e in history(stack, approval_id)] == ["parked", "approved", "expired"]
    with admin(stack) as client:
        expired = client.get("/admin/api/call-approvals", params={"status": "expired"}).json()
    assert approval_id in [a["approval_id"] for a in expired["approvals"]]


# --- the CLI -----------------------------------------------------------------------------


def regate(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regate", "approvals", *args, "--config", str(stack.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_lists_and_decides(stack: RunningStack) -> None:
    approval_id = park(stack, {"path": "/scratch/cli"})

    listed = regate(stack, "list", "--status", "pending")
    missing_reason = regate(stack, "approve", approval_id)
    approved = regate(stack, "approve", approval_id, "--reason", "via the CLI")
    again = regate(stack, "deny", approval_id, "--reason", "too late")

    assert listed.returncode == 0, listed.stderr
    (line,) = [row for row in listed.stdout.splitlines() if approval_id in row]
    assert "pending" in line
    assert "janitor.purge" in line
    assert missing_reason.returncode == 2  # argparse: --reason is required
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith(f"approved {approval_id}")
    assert "by admin-token: via the CLI" in approved.stdout
    assert again.returncode == 1
    assert "approval_not_pending" in again.stderr
    assert poll(stack, approval_id).json()["status"] == "approved"
