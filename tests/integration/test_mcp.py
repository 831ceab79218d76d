"""MCP at /mcp end to end: the official SDK client, and raw HTTP, against the real stack.

The SDK client is async; each test drives it with `asyncio.run` (no async test
plugin needed). Every tool call is checked against its decision record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
from conftest import RunningStack
from mcp import Client, ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

pytestmark = pytest.mark.integration

T = TypeVar("T")
DECISION_ID = "regate.dev/decision_id"
ACCEPT = "application/json, text/event-stream"


def with_session(
    stack: RunningStack, use: Callable[[ClientSession], Awaitable[T]], sub: str = "test-client"
) -> T:
    """Connect the SDK client as `sub`, initialize, run `use`, and close the session."""

    async def main() -> T:
        headers = {"Authorization": f"Bearer {stack.token(sub)}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(f"{stack.base_url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await use(session)

    return asyncio.run(main())


def call(stack: RunningStack, name: str, arguments: dict[str, Any]) -> CallToolResult:
    return with_session(stack, lambda s: s.call_tool(name, arguments))


def refused(stack: RunningStack, name: str, arguments: dict[str, Any]) -> MCPError:
    """The JSON-RPC error a call ends in (caught inside, before task groups wrap it)."""

    async def use(session: ClientSession) -> MCPError:
        try:
            result = await session.call_tool(name, arguments)
        except MCPError as exc:
            return exc
        raise AssertionError(f"expected an MCP error, got {result}")

    return with_session(stack, use)


def only_decision(stack: RunningStack, decision_id: str) -> dict[str, Any]:
    rows = [r for r in stack.audit_rows(decision_id) if r["kind"] == "decision"]
    assert len(rows) == 1, rows
    assert rows[0]["input"] is None or rows[0]["input"]["request"]["path"] == "/mcp"
    return rows[0]


# --- the official SDK client -------------------------------------------------------


def test_initialize_negotiates_and_names_the_server(stack: RunningStack) -> None:
    async def use(session: ClientSession) -> Any:
        return session.initialize_result

    result = with_session(stack, use)
    assert result.protocol_version == "2025-11-25"
    assert result.server_info.name == "regate"
    assert result.capabilities.tools is not None
    assert result.capabilities.tools.list_changed is False


def test_list_offers_only_what_the_caller_may_call(stack: RunningStack) -> None:
    async def names(session: ClientSession) -> dict[str, Any]:
        return {t.name: t for t in (await session.list_tools()).tools}

    demo = with_session(stack, names, sub="demo-client")
    assert sorted(demo) == ["calculator.add", "calculator.stats"]  # no ops.shell, no sleepy
    add = demo["calculator.add"]
    assert add.description == "Add two numbers and return their sum."
    assert add.input_schema["required"] == ["a", "b"]

    tester = with_session(stack, names)
    assert {"calculator.add", "sleepy.nap", "sneaky.echo"} <= set(tester)
    assert "ops.shell" not in tester  # denied by policy
    assert "sneaky.peek" not in tester  # granted, but its description is flagged


def test_allowed_call_returns_the_result_and_is_recorded(stack: RunningStack) -> None:
    result = call(stack, "calculator.add", {"a": 2, "b": 40})

    assert result.is_error is False
    assert result.structured_content == {"sum": 42}
    assert json.loads(result.content[0].text) == {"sum": 42}  # type: ignore[union-attr]
    assert result.meta is not None
    rows = stack.audit_rows(result.meta[DECISION_ID])
    assert [r["kind"] for r in rows] == ["decision", "receipt"]
    assert rows[0]["outcome"] == "allow"
    assert rows[0]["input"]["request"] | {"id": "", "time": "", "source_ip": ""} == {
        "id": "",
        "time": "",
        "source_ip": "",
        "method": "POST",
        "path": "/mcp",
        "source_ip_from": "peer",
    }
    assert rows[0]["input"]["caller"]["sub"] == "test-client"
    assert rows[1]["ok"] is True


def test_denied_call_is_an_error_naming_its_decision(stack: RunningStack) -> None:
    before = stack.tool_counts("ops.shell")
    error = refused(stack, "ops.shell", {"command": "id"})

    assert error.code == -32003
    assert "denied by policy" in error.message
    assert error.data["code"] == "policy_denied"
    assert error.data["reasons"][0]["code"] == "no_grant"
    assert error.data["request_id"]
    record = only_decision(stack, error.data["decision_id"])
    assert record["outcome"] == "deny"
    assert record["status"] == 403
    assert stack.tool_counts("ops.shell") == before  # nothing ran


def test_bad_arguments_are_an_error_with_the_failing_path(stack: RunningStack) -> None:
    error = refused(stack, "calculator.add", {"a": "two", "b": 2})

    assert error.code == -32602
    assert error.data["code"] == "invalid_arguments"
    assert error.data["path"] == "/a"
    assert only_decision(stack, error.data["decision_id"])["status"] == 422


def test_timeout_is_a_tool_error_result(stack: RunningStack) -> None:
    result = call(stack, "sleepy.nap", {"seconds": 5})  # its limit is 1 s

    assert result.is_error is True
    assert "timeout" in result.content[0].text  # type: ignore[union-attr]
    assert result.structured_content["error"]["type"] == "timeout"
    assert result.meta is not None
    decision, receipt = stack.audit_rows(result.meta[DECISION_ID])
    assert decision["outcome"] == "allow"
    assert receipt["kind"] == "receipt"
    assert receipt["error"]["type"] == "timeout"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("calculator.divide", "tool_not_found"),
        ("nosuch.tool", "agent_not_found"),
        ("add", "agent_not_found"),
    ],
)
def test_unknown_tool_is_invalid_params(stack: RunningStack, name: str, code: str) -> None:
    error = refused(stack, name, {})

    assert error.code == -32602
    assert error.data["code"] == code
    assert f"unknown tool {name!r}" in error.message
    assert only_decision(stack, error.data["decision_id"])["status"] == 404


def test_flagged_tool_is_withheld_and_refused(stack: RunningStack) -> None:
    error = refused(stack, "sneaky.peek", {})

    assert error.code == -32602
    assert error.data["code"] == "tool_flagged"
    assert error.data["flags"][0]["code"] == "zero_width"
    assert "U+200B" in error.message
    assert only_decision(stack, error.data["decision_id"])["code"] == "tool_flagged"
    assert call(stack, "sneaky.echo", {"x": 1}).structured_content == {"echo": {"x": 1}}
    log = (stack.root / "logs" / "gateway.log").read_text()
    flagged = [json.loads(line) for line in log.splitlines() if "tool_description_flagged" in line]
    flagged_tools = {(f["agent_id"], f["tool"]) for f in flagged}
    assert ("sneaky", "peek") in flagged_tools
    assert ("sneaky", "echo") not in flagged_tools


def test_flagged_tool_is_refused_on_v1_invoke_too(stack: RunningStack) -> None:
    response = stack.invoke("sneaky", "peek", {})

    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "tool_flagged"


def test_high_level_client_falls_back_to_the_handshake(stack: RunningStack) -> None:
    """`mcp.Client` first probes the stateless 2026 revision (server/discover), which
    Regate does not speak; it must fall back to `initialize` and work."""

    async def main() -> CallToolResult:
        headers = {"Authorization": f"Bearer {stack.token()}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            transport = streamable_http_client(f"{stack.base_url}/mcp", http_client=http)
            async with Client(transport) as client:
                assert "calculator.add" in {t.name for t in (await client.list_tools()).tools}
                return await client.call_tool("calculator.add", {"a": 1, "b": 1})

    assert asyncio.run(main()).structured_content == {"sum": 2}


def test_ping(stack: RunningStack) -> None:
    with_session(stack, lambda s: s.send_ping())


# --- raw HTTP: the transport's rules -----------------------------------------------


def post(
    stack: RunningStack,
    body: Any,
    *,
    token: str | None = None,
    session: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if session:
        sent["Mcp-Session-Id"] = session
    sent.update(headers or {})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with stack.client() as client:
        return client.post("/mcp", content=content, headers=sent)


def initialize(stack: RunningStack, token: str, version: str = "2025-06-18") -> str:
    response = post(
        stack,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
        token=token,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["result"]["protocolVersion"] == version
    session_id = response.headers["mcp-session-id"]
    assert len(session_id) >= 40
    return session_id


def rpc(method: str, params: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}}


def test_missing_token_is_401_before_anything_else(stack: RunningStack) -> None:
    response = post(stack, rpc("tools/list"))

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["data"]["code"] == "missing_token"
    assert response.json()["id"] is None


def test_tools_call_with_a_bad_token_is_401_and_recorded(stack: RunningStack) -> None:
    response = post(stack, rpc("tools/call", {"name": "calculator.add"}), token="garbage")

    assert response.status_code == 401
    data = response.json()["error"]["data"]
    assert data["code"] == "invalid_token"
    record = only_decision(stack, data["decision_id"])
    assert record["status"] == 401
    assert record["caller"] is None


def test_token_is_checked_on_every_request(stack: RunningStack) -> None:
    session = initialize(stack, stack.token())

    response = post(stack, rpc("tools/list"), session=session, token=stack.token(ttl_s=-120))
    assert response.status_code == 401


def test_request_without_session_is_400(stack: RunningStack) -> None:
    response = post(stack, rpc("tools/list"), token=stack.token())

    assert response.status_code == 400
    assert response.json()["error"]["data"]["code"] == "session_required"


def test_unknown_session_is_404(stack: RunningStack) -> None:
    token = stack.token()
    response = post(stack, rpc("tools/call", {"name": "calculator.add"}), token=token, session="x")

    assert response.status_code == 404
    data = response.json()["error"]["data"]
    assert data["code"] == "session_not_found"
    assert only_decision(stack, data["decision_id"])["status"] == 404


def test_session_is_bound_to_its_caller(stack: RunningStack) -> None:
    session = initialize(stack, stack.token())

    response = post(stack, rpc("ping"), token=stack.token("demo-client"), session=session)
    assert response.status_code == 403
    assert response.json()["error"]["data"]["code"] == "session_forbidden"
    assert post(stack, rpc("ping"), token=stack.token(), session=session).status_code == 200


def test_delete_ends_the_session(stack: RunningStack) -> None:
    token = stack.token()
    session = initialize(stack, token)
    headers = {"Authorization": f"Bearer {token}", "Mcp-Session-Id": session}

    with stack.client() as client:
        assert client.delete("/mcp", headers=headers).status_code == 204
        assert client.delete("/mcp", headers=headers).status_code == 404
    assert post(stack, rpc("ping"), token=token, session=session).status_code == 404


def test_unknown_method_is_32601(stack: RunningStack) -> None:
    token = stack.token()
    session = initialize(stack, token)

    response = post(stack, rpc("resources/list"), token=token, session=session)
    assert response.status_code == 200
    assert response.json()["id"] == 1
    assert response.json()["error"]["code"] == -32601


def test_malformed_json_is_32700(stack: RunningStack) -> None:
    token = stack.token()
    session = initialize(stack, token)

    response = post(stack, b'{"jsonrpc": "2.0", "id": 1,', token=token, session=session)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700
    assert response.json()["id"] is None


def test_invalid_request_is_32600(stack: RunningStack) -> None:
    token = stack.token()
    session = initialize(stack, token)

    response = post(
        stack, {"jsonrpc": "1.0", "id": 7, "method": "ping"}, token=token, session=session
    )
    assert response.status_code == 400
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32600, "message": 'the message needs "jsonrpc": "2.0"'},
    }


def test_notification_is_accepted_with_202_and_no_body(stack: RunningStack) -> None:
    token = stack.token()
    session = initialize(stack, token)

    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = post(stack, note, token=token, session=session)
    assert response.status_code == 202
    assert response.content == b""


def test_protocol_version_header_must_match_the_session(stack: RunningStack) -> None:
    token = stack.token()
    session = initialize(stack, token)
    same = {"MCP-Protocol-Version": "2025-06-18"}
    other = {"MCP-Protocol-Version": "1900-01-01"}

    assert post(stack, rpc("ping"), token=token, session=session, headers=same).status_code == 200
    response = post(stack, rpc("ping"), token=token, session=session, headers=other)
    assert response.status_code == 400
    assert response.json()["error"]["data"]["code"] == "unsupported_protocol_version"


def test_unknown_version_is_answered_with_the_latest(stack: RunningStack) -> None:
    body = rpc("initialize", {"protocolVersion": "2024-01-01", "capabilities": {}}, id=0)
    response = post(stack, body, token=stack.token())

    assert response.json()["result"]["protocolVersion"] == "2025-11-25"


@pytest.mark.parametrize(
    ("version", "status"),
    [("2025-03-26", 200), ("2025-06-18", 400)],
)
def test_batches_follow_the_negotiated_version(
    stack: RunningStack, version: str, status: int
) -> None:
    token = stack.token()
    session = initialize(stack, token, version)
    batch = [
        rpc("ping", id=1),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        rpc("tools/call", {"name": "calculator.add", "arguments": {"a": 1, "b": 2}}, id=2),
    ]

    response = post(stack, batch, token=token, session=session)
    assert response.status_code == status, response.text
    if status == 200:
        ping, added = response.json()
        assert ping == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert added["result"]["structuredContent"] == {"sum": 3}
    else:
        data = response.json()["error"]["data"]
        assert data["code"] == "batch_not_supported"
        assert only_decision(stack, data["decision_id"])["status"] == 400


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Accept": "text/html"}, 406),
        ({"Content-Type": "text/plain"}, 415),
        ({"Origin": "http://evil.example"}, 403),
    ],
)
def test_transport_headers_are_checked(
    stack: RunningStack, headers: dict[str, str], status: int
) -> None:
    response = post(stack, rpc("ping"), token=stack.token(), headers=headers)

    assert response.status_code == status
    assert response.json()["error"]["code"] == -32600


def test_get_is_405(stack: RunningStack) -> None:
    with stack.client() as client:
        response = client.get("/mcp", headers={"Accept": "text/event-stream"})

    assert response.status_code == 405
    assert response.headers["allow"] == "POST, DELETE"
