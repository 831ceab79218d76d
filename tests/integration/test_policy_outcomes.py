"""Policy outcomes the gateway turns into HTTP: rate limits (429) and log redaction.

Approvals (202) have their own file, test_call_approvals.py.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from conftest import RunningStack

pytestmark = pytest.mark.integration


def test_over_the_rate_limit_is_429_with_retry_after(stack: RunningStack) -> None:
    # policies/regate/rate_limits/data.json: test-limited may make 3 calls a minute.
    token = stack.token("test-limited")
    statuses = [
        stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=token).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 200]

    response = stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=token)

    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "60"
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["retry_after_s"] == 60
    assert [r["code"] for r in error["reasons"]] == ["rate_limited"]
    (record,) = [r for r in stack.audit_rows(error["decision_id"]) if r["kind"] == "decision"]
    assert record["status"] == 429
    assert record["input"]["usage"]["calls_last_minute"] == 3


def test_arguments_the_policy_names_are_masked_in_the_log(stack: RunningStack) -> None:
    # policies/regate/redact/data.json masks `password`, `api_key`, `token`, `secret`.
    response = stack.invoke("sleepy", "probe", {"password": "hunter2", "note": "kept"})

    assert response.status_code == 200, response.text
    rows = stack.audit_rows(response.json()["decision_id"])
    decision = rows[0]
    assert decision["policy"]["obligations"]["redact"] == ["password"]
    assert decision["input"]["arguments"] == {"password": "[redacted]", "note": "kept"}
    assert "hunter2" not in json.dumps(rows)


def test_a_parallel_burst_counts_in_full(stack: RunningStack) -> None:
    # policies/regate/rate_limits/data.json: test-burst may make 3 calls a minute.
    token = stack.token("test-burst")
    before = stack.tool_counts("calculator.add")[0]

    async def burst(n: int) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/invoke/calculator/add",
                        json={"arguments": {"a": i, "b": 1}},
                        headers=headers,
                    )
                    for i in range(n)
                )
            )

    responses = asyncio.run(burst(12))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [429] * 9, [r.text for r in responses]
    assert stack.tool_counts("calculator.add")[0] == before + 3
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.headers["retry-after"] == "60"
        (record,) = [
            r
            for r in stack.audit_rows(refused.json()["error"]["decision_id"])
            if r["kind"] == "decision"
        ]
        assert record["input"]["usage"]["calls_last_minute"] >= 3


def test_a_limit_per_caller_and_tool(stack: RunningStack) -> None:
    # test-tool-limited: calculator.stats 2 calls a minute; its other calls are not limited.
    token = stack.token("test-tool-limited")

    def stats() -> httpx.Response:
        return stack.invoke("calculator", "stats", {"values": [1, 2, 3]}, token=token)

    assert [stats().status_code for _ in range(2)] == [200, 200]

    third = stats()

    assert third.status_code == 429, third.text
    assert third.headers["retry-after"] == "60"
    error = third.json()["error"]
    assert [r["code"] for r in error["reasons"]] == ["rate_limited"]
    assert 'to tool "stats" of agent "calculator"' in error["reasons"][0]["message"]
    (record,) = [r for r in stack.audit_rows(error["decision_id"]) if r["kind"] == "decision"]
    assert record["input"]["usage"] == {"calls_last_minute": 2, "tool_calls_last_minute": 2}
    # Another tool of the same caller is counted apart, and still runs.
    add = stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=token)
    assert add.status_code == 200, add.text
    (allowed,) = [r for r in stack.audit_rows(add.json()["decision_id"]) if r["kind"] == "decision"]
    assert allowed["input"]["usage"] == {"calls_last_minute": 3, "tool_calls_last_minute": 0}


def test_a_costly_tool_uses_more_of_the_limit(stack: RunningStack) -> None:
    # test-costly may use 10 units a minute; janitor.sweep costs 4 (rate_limits/data.json).
    token = stack.token("test-costly")

    def sweep() -> httpx.Response:
        return stack.invoke("janitor", "sweep", {"path": "/scratch"}, token=token)

    ran = [sweep() for _ in range(3)]  # 0, 4 and 8 units used before each: under 10

    assert [r.status_code for r in ran] == [200, 200, 200], [r.text for r in ran]
    first = [r for r in stack.audit_rows(ran[0].json()["decision_id"]) if r["kind"] == "decision"]
    assert first[0]["policy"]["obligations"] == {"rate_cost": 4}
    fourth = sweep()
    assert fourth.status_code == 429, fourth.text
    error = fourth.json()["error"]
    (record,) = [r for r in stack.audit_rows(error["decision_id"]) if r["kind"] == "decision"]
    assert record["input"]["usage"] == {"calls_last_minute": 12, "tool_calls_last_minute": 12}
