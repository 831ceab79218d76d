"""JSON-RPC 2.0 messages as MCP narrows them: one row per kind of message."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.mcp_jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    Invalid,
    Notification,
    Request,
    Response,
    RpcError,
    error,
    parse_body,
    parse_message,
    result,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"jsonrpc": "2.0", "id": 1, "method": "ping"}, Request(1, "ping", {})),
        (
            {"jsonrpc": "2.0", "id": "a", "method": "x", "params": {"k": 1}},
            Request("a", "x", {"k": 1}),
        ),
        (
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            Notification("notifications/initialized"),
        ),
        ({"jsonrpc": "2.0", "id": 3, "result": {}}, Response(3)),
        ({"jsonrpc": "2.0", "id": 3, "error": {"code": 1, "message": "m"}}, Response(3)),
    ],
)
def test_valid_messages(value: dict[str, Any], expected: object) -> None:
    assert parse_message(value) == expected


@pytest.mark.parametrize(
    ("value", "id", "code"),
    [
        ([1], None, INVALID_REQUEST),
        ("ping", None, INVALID_REQUEST),
        ({"id": 1, "method": "ping"}, 1, INVALID_REQUEST),
        ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, 1, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1, "method": 7}, 1, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}, 1, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1}, 1, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "result": {}}, None, INVALID_REQUEST),
    ],
)
def test_invalid_messages_keep_a_readable_id(value: Any, id: object, code: int) -> None:
    message = parse_message(value)

    assert isinstance(message, Invalid)
    assert message.id == id
    assert message.error.code == code


def test_a_batch_is_a_list_of_messages() -> None:
    messages, is_batch = parse_body([{"jsonrpc": "2.0", "method": "n"}, 5])

    assert is_batch
    assert isinstance(messages[0], Notification)
    assert isinstance(messages[1], Invalid)
    assert parse_body({"jsonrpc": "2.0", "method": "n"})[1] is False


def test_an_empty_batch_is_invalid() -> None:
    with pytest.raises(RpcError) as info:
        parse_body([])
    assert info.value.code == INVALID_REQUEST


def test_answers() -> None:
    assert result(1, {"a": 1}) == {"jsonrpc": "2.0", "id": 1, "result": {"a": 1}}
    assert error(None, RpcError(-32601, "no", {"code": "x"})) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32601, "message": "no", "data": {"code": "x"}},
    }
    assert "data" not in error(1, RpcError(-32601, "no"))["error"]
