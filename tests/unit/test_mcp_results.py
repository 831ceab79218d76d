"""Pipeline answers and Regate errors as MCP tool results and JSON-RPC errors."""

from __future__ import annotations

import pytest

from gateway.errors import (
    CallApprovalDenied,
    CallApprovalMismatch,
    CallApprovalUndecided,
    CallApprovalUsed,
    CallParked,
    InvalidArguments,
    PolicyDenied,
    PolicyUnavailable,
    RunnerUnavailable,
    ToolNotFound,
)
from gateway.mcp_errors import APPROVAL_PENDING, DENIED, RATE_LIMITED, rpc_code, rpc_error
from gateway.mcp_jsonrpc import INTERNAL_ERROR, INVALID_PARAMS
from gateway.mcp_tools import call_result, parked_result, split_name
from regate.errors import BadRequest, RegateError


def test_success_has_text_and_structured_content() -> None:
    result = call_result({"decision_id": "d1", "ok": True, "result": {"sum": 3}, "metrics": {}})

    assert result["isError"] is False
    assert result["content"] == [{"type": "text", "text": '{"sum": 3}'}]
    assert result["structuredContent"] == {"sum": 3}
    assert result["_meta"]["regate.dev/decision_id"] == "d1"


def test_a_result_that_is_not_an_object_has_no_structured_content() -> None:
    result = call_result({"decision_id": "d1", "ok": True, "result": [1, 2]})

    assert result["content"][0]["text"] == "[1, 2]"
    assert "structuredContent" not in result


def test_tool_failure_is_an_error_result() -> None:
    result = call_result(
        {"decision_id": "d2", "ok": False, "error": {"type": "timeout", "message": "ran 1.0 s"}}
    )

    assert result["isError"] is True
    assert result["content"][0]["text"] == "the tool failed (timeout): ran 1.0 s"
    assert result["structuredContent"] == {"error": {"type": "timeout", "message": "ran 1.0 s"}}


class RateLimited(RegateError):
    status = 429
    code = "rate_limited"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (PolicyDenied("no", reasons=[]), DENIED),
        (PolicyDenied("wait", reasons=[], approval_required=True), APPROVAL_PENDING),
        (RateLimited("slow down"), RATE_LIMITED),
        (CallApprovalUndecided("not yet"), APPROVAL_PENDING),
        (CallApprovalDenied("no"), DENIED),
        (CallApprovalMismatch("other arguments"), DENIED),
        (CallApprovalUsed("once"), INVALID_PARAMS),
        (InvalidArguments("bad", path="/a"), INVALID_PARAMS),
        (ToolNotFound("none"), INVALID_PARAMS),
        (BadRequest("bad"), INVALID_PARAMS),
        (PolicyUnavailable("down"), INTERNAL_ERROR),
        (RunnerUnavailable("down"), INTERNAL_ERROR),
    ],
)
def test_regate_errors_map_to_json_rpc_codes(exc: RegateError, code: int) -> None:
    assert rpc_code(exc) == code


def test_error_data_carries_the_regate_code_and_details() -> None:
    exc = InvalidArguments("argument /a is invalid", path="/a", decision_id="d3")

    error = rpc_error(exc, "req-1")

    assert error.message == "argument /a is invalid"
    assert error.data == {
        "code": "invalid_arguments",
        "request_id": "req-1",
        "path": "/a",
        "decision_id": "d3",
    }


@pytest.mark.parametrize(
    ("name", "parts"),
    [("calculator.add", ("calculator", "add")), ("add", ("add", "")), ("a.b.c", ("a", "b.c"))],
)
def test_names_split_on_the_first_dot(name: str, parts: tuple[str, str]) -> None:
    assert split_name(name) == parts


def test_a_parked_call_is_a_tool_error_carrying_its_approval() -> None:
    parked = CallParked(
        "policy requires an admin's approval for this call; it waits as approval a-1",
        approval_id="a-1",
        status="pending",
        expires_at="2026-11-22T19:00:00.000000+00:00",
        reasons=[{"code": "approval_required", "message": "destructive"}],
        decision_id="d-1",
    )

    result = parked_result(parked)

    assert result["isError"] is True
    assert "a-1" in result["content"][0]["text"]
    assert result["structuredContent"] == {
        "approval": {
            "approval_id": "a-1",
            "status": "pending",
            "expires_at": "2026-11-22T19:00:00.000000+00:00",
            "reasons": [{"code": "approval_required", "message": "destructive"}],
        }
    }
    assert result["_meta"] == {"regate.dev/decision_id": "d-1", "regate.dev/approval_id": "a-1"}
