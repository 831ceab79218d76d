"""Policy outcomes the gateway turns into HTTP: rate limits (429) and log redaction."""

from __future__ import annotations

import json

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
