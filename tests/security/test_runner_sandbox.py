"""The runner on its own: grants are required and checked, the sandbox is closed."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningStack, stack_in_mode

from regate import crypto
from regate.canonical import digest
from regate.grants import issue_grant
from sandbox_runner.limits import Limits
from sandbox_runner.sandbox import Sandbox, SandboxUnavailable, run_tool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["cold", "pooled"])
def stack(request: pytest.FixtureRequest, stack: RunningStack) -> RunningStack:
    """Each test here runs twice: sandboxes started per call, and taken from a pool."""
    return stack_in_mode(request, stack)


PROBE_LIMITS = {"timeout_s": 5, "memory_mb": 128, "output_kb": 64, "pids": 8}


def grant_for(
    stack: RunningStack,
    arguments: dict[str, Any],
    *,
    key: crypto.Jwk | None = None,
    ttl_s: int = 30,
    decision_id: str | None = None,
) -> str:
    return issue_grant(
        decision_id=decision_id or f"test-{time.monotonic_ns()}",
        agent_id="sleepy",
        tool="probe",
        entrypoint=["python3", "-I", "-S", "probe.py"],
        limits=PROBE_LIMITS,
        arguments_sha256=digest(arguments),
        key=key or crypto.load_private_key(stack.settings.gateway.grant_key),
        ttl_s=ttl_s,
    )


def run(stack: RunningStack, grant: str | None, arguments: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {grant}"} if grant else {}
    with stack.runner_client() as client:
        return client.post("/v1/run", json={"arguments": arguments}, headers=headers)


def test_no_grant_runs_nothing(stack: RunningStack) -> None:
    response = run(stack, None, {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "grant_required"


@pytest.mark.parametrize("case", ["forged", "expired", "other_arguments"])
def test_bad_grant_is_refused(stack: RunningStack, case: str) -> None:
    arguments = {"x": 1}
    if case == "forged":
        impostor, _ = crypto.generate_ec_key("gateway")  # right kid, wrong key
        grant = grant_for(stack, arguments, key=impostor)
    elif case == "expired":
        grant = grant_for(stack, arguments, ttl_s=-60)
    else:
        grant = grant_for(stack, {"x": 2})
    response = run(stack, grant, arguments)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "grant_rejected"


def test_a_grant_runs_once(stack: RunningStack) -> None:
    grant = grant_for(stack, {})
    assert run(stack, grant, {}).status_code == 200
    replay = run(stack, grant, {})
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "grant_replayed"


def tool_run_lines(stack: RunningStack, decision_id: str) -> list[dict[str, Any]]:
    lines = (stack.root / "logs" / "runner.log").read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [
        r for r in records if r.get("event") == "tool_run" and r.get("decision_id") == decision_id
    ]


def test_each_run_is_logged_after_its_answer(stack: RunningStack) -> None:
    decision_id = f"logged-{time.monotonic_ns()}"
    response = run(stack, grant_for(stack, {}, decision_id=decision_id), {})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 10  # the line follows the answer, not before it
    while not (lines := tool_run_lines(stack, decision_id)):
        assert time.monotonic() < deadline, "no tool_run line for the run"
        time.sleep(0.05)
    assert len(lines) == 1, lines
    assert lines[0]["tool"] == "sleepy.probe"
    assert lines[0]["ok"] is True
    assert lines[0]["metrics"] == response.json()["metrics"]
    assert lines[0]["request_id"] == response.headers["x-request-id"]


class Canary:
    """A listener on the host's loopback that counts every connection it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_sandbox_has_no_network_no_secrets_and_no_root(stack: RunningStack) -> None:
    canary = Canary()
    try:
        arguments = {"canary_port": canary.port}
        response = run(stack, grant_for(stack, arguments), arguments)
        time.sleep(0.3)
    finally:
        canary.close()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True, body
    probe = body["result"]
    assert probe["interfaces"] == ["lo"]  # no interface but loopback
    assert probe["routes"] == []  # and no route anywhere
    assert probe["canary"] in ("ConnectionRefusedError", "OSError")
    assert canary.hits == 0  # the host's loopback heard nothing
    assert probe["uid"] != 0
    assert probe["gid"] != 0
    assert set(probe["env"]) <= {"PATH", "HOME", "LANG", "PWD"}  # nothing of the runner's
    assert probe["tool_writable"] is False
    assert probe["usr_writable"] is False
    assert probe["tmp_writable"] is True
    assert probe["home_visible"] is False
    assert probe["cwd"] == "/tool"


def test_tools_endpoint_reports_health(stack: RunningStack) -> None:
    with stack.runner_client() as client:
        tools = client.get("/v1/tools")
        missing = client.get("/v1/tools/nope.nothing")
    assert tools.status_code == 200
    names = {t["name"]: t for t in tools.json()["tools"]}
    assert names["calculator.add"]["state"] == "ready"
    assert missing.status_code == 404


def test_missing_bwrap_refuses_to_run_anything(tmp_path: Path) -> None:
    sandbox = Sandbox(binary=str(tmp_path / "no-such-bwrap"), uid=65534, gid=65534)
    marker = tmp_path / "ran"
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        asyncio.run(run_tool(sandbox, tmp_path, ["touch", str(marker)], {}, Limits(1, 64, 1, 4)))
    assert not marker.exists()  # never unconfined
