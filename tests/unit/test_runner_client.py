"""The runner client (`gateway.runner_client`): a run result, or a 502 saying the tool's
fate, whatever the runner does. A scripted peer on loopback (tests/scripted_peer.py)
answers as the runner would not on demand; the client is the gateway's own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from conftest import free_port
from scripted_peer import Action, ScriptedPeer, answer, hang_up, stall

from gateway import runner_client, sidecar_http
from gateway.errors import RunnerUnavailable
from gateway.runner_client import RunnerClient
from gateway.sidecar_http import IDLE_KEEPALIVE_S, sidecar_session
from regate.serve import HttpLimits
from regate.settings import Address

T = TypeVar("T")
RESULT = {"ok": True, "result": {"sum": 3}, "metrics": {"wall_ms": 4.2}}


def with_runner(port: int, use: Callable[[RunnerClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with sidecar_session(Address(host="127.0.0.1", port=port)) as session:
            return await use(RunnerClient(session, f"http://127.0.0.1:{port}"))

    return asyncio.run(go())


def run(port: int) -> dict[str, Any]:
    return with_runner(port, lambda r: r.run("g.r.ant", {"a": 1, "b": 2}, tool_timeout_s=0.2))


@pytest.fixture
def peer() -> Any:
    with ScriptedPeer() as scripted:
        yield scripted


def test_a_run_hands_over_the_grant_and_the_arguments(peer: ScriptedPeer) -> None:
    peer.on("POST", "/v1/run", answer(json_body=RESULT))
    assert run(peer.port) == RESULT
    [request] = peer.seen
    assert request.target == "/v1/run"
    assert request.headers["authorization"] == "Bearer g.r.ant"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"arguments": {"a": 1, "b": 2}}


@pytest.mark.parametrize(
    ("action", "cause"),
    [
        pytest.param(answer(500, json_body={"error": "boom"}), "runner_error", id="http-500"),
        pytest.param(answer(403, json_body={"error": {"code": "grant_replayed"}}), "runner_error", id="grant-refused"),
        pytest.param(answer(body=b"<html>"), "runner_error", id="not-json"),
        pytest.param(answer(json_body={"result": 1}), "runner_error", id="no-ok-flag"),
        pytest.param(answer(json_body={"ok": True}), "runner_error", id="neither-result-nor-error"),
        pytest.param(answer(json_body={"ok": True, "result": 1, "metrics": []}), "runner_error", id="metrics-not-object"),
        pytest.param(hang_up(), "unreachable", id="hung-up"),
        pytest.param(stall(), "unreachable", id="past-the-deadline"),
    ],
)  # fmt: skip
def test_anything_but_a_result_is_runner_unavailable(
    peer: ScriptedPeer, action: Action, cause: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_client, "OVERHEAD_S", 0.1)  # deadline: 0.2 + 0.1 s
    peer.on("POST", "/v1/run", action)
    with pytest.raises(RunnerUnavailable) as caught:
        run(peer.port)
    assert caught.value.status == 502
    assert caught.value.details == {"cause": cause}
    assert peer.count("POST", "/v1/run") == 1  # a run is never retried


def test_a_runner_that_is_not_there_is_unreachable() -> None:
    with pytest.raises(RunnerUnavailable) as caught:
        run(free_port())
    assert caught.value.details == {"cause": "unreachable"}
    assert "did not run" in caught.value.message


def test_health_and_tool_lists(peer: ScriptedPeer) -> None:
    peer.on("GET", "/healthz", answer(json_body={"ok": True}))
    tools = {"sandbox": "bwrap", "summary": {"ready": 2}, "tools": []}
    peer.on("GET", "/v1/tools", answer(json_body=tools))

    async def ask(runner: RunnerClient) -> tuple[bool, dict[str, Any], dict[str, Any] | None]:
        return await runner.healthy(), await runner.tools(), await runner.tool_health()

    assert with_runner(peer.port, ask) == (True, tools, {"sandbox": "bwrap", "tools": {"ready": 2}})


def test_a_broken_tool_list_is_said_so(peer: ScriptedPeer) -> None:
    peer.on("GET", "/healthz", answer(500))
    peer.on("GET", "/v1/tools", answer(body=b"[]"))

    async def ask(runner: RunnerClient) -> tuple[bool, dict[str, Any] | None]:
        with pytest.raises(RunnerUnavailable, match="did not give its tool list"):
            await runner.tools()
        return await runner.healthy(), await runner.tool_health()

    assert with_runner(peer.port, ask) == (False, None)


def test_idle_connections_are_dropped_before_the_server_drops_them() -> None:
    """A request sent on a connection the server is closing is lost (a POST is not
    retried): the client must give up idle connections first."""
    assert HttpLimits().keep_alive_s > IDLE_KEEPALIVE_S


def test_an_idle_connection_is_dropped_after_the_keepalive(
    peer: ScriptedPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidecar_http, "IDLE_KEEPALIVE_S", 0.3)
    peer.on("GET", "/healthz", answer(json_body={}))

    async def ask(runner: RunnerClient) -> None:
        for pause in (0.0, 0.01, 1.2):  # the last after the connection went idle
            await asyncio.sleep(pause)
            assert await runner.healthy()

    with_runner(peer.port, ask)
    first, second, third = (s.client_port for s in peer.seen)
    assert first == second  # reused while fresh
    assert third != second  # a new connection after the idle time
