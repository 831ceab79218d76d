"""Faults in the stack's parts: each is contained, logged, and fails closed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from burst import Answer, Burst, all_audit_rows, receipts_without_an_allow_before_them
from conftest import RunningStack, start_stack, stop_stack
from peers import SlowOpa

from regate.supervisor import Service, stop_services

pytestmark = pytest.mark.integration

# A breaker that opens and probes quickly, so the tests see every state in seconds.
BREAKER = "breaker_failures = 3\nbreaker_cooldown_s = 0.5\n"
ADD = "/v1/invoke/calculator/add"


@pytest.fixture(scope="module")
def own_stack() -> Iterator[RunningStack]:
    """A stack of this module's own, since these tests stop its parts."""
    running = start_stack("regate-faults-", opa_config=BREAKER)
    try:
        yield running
    finally:
        stop_stack(running)


def stop(running: RunningStack, name: str) -> Service:
    service = running.stack.service(name)
    stop_services([service])
    assert service.process is not None
    assert service.process.poll() is not None
    return service


def restart(running: RunningStack, service: Service) -> None:
    running.stack.services.remove(service)
    fresh = Service(service.name, service.argv, service.address, service.ready_path)
    running.stack.start_service(fresh, timeout_s=30)


def test_opa_stopped_is_503_and_no_tool_runs(own_stack: RunningStack) -> None:
    assert own_stack.invoke("calculator", "add", {"a": 1, "b": 1}).status_code == 200
    before = own_stack.tool_counts("calculator.add")
    opa = stop(own_stack, "opa")
    try:
        response = own_stack.invoke("calculator", "add", {"a": 1, "b": 1})

        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "policy_unavailable"
        assert "denied" in error["message"]
        assert "127.0.0.1" not in response.text  # 5xx bodies say nothing internal
        assert own_stack.tool_counts("calculator.add") == before
        rows = own_stack.audit_rows(error["decision_id"])
        assert [(r["kind"], r["outcome"], r["status"]) for r in rows] == [
            ("decision", "error", 503)
        ]
        with own_stack.client() as client:
            ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["opa"] is False
    finally:
        restart(own_stack, opa)
    assert own_stack.invoke("calculator", "add", {"a": 1, "b": 1}).status_code == 200


def test_runner_stopped_is_502_and_audited(own_stack: RunningStack) -> None:
    runner = stop(own_stack, "runner")
    try:
        response = own_stack.invoke("calculator", "add", {"a": 1, "b": 1})

        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "runner_unavailable"
        rows = own_stack.audit_rows(error["decision_id"])
        assert [r["kind"] for r in rows] == ["decision", "receipt"]
        assert rows[0]["outcome"] == "allow"
        assert rows[1]["ok"] is False
        assert rows[1]["status"] == 502
    finally:
        restart(own_stack, runner)
    assert own_stack.invoke("calculator", "add", {"a": 1, "b": 1}).status_code == 200


def kill(running: RunningStack, name: str) -> Service:
    """SIGKILL the one process this stack started for `name`, by its PID."""
    service = running.stack.service(name)
    assert service.process is not None
    service.process.kill()
    service.process.wait(10)
    stop_services([service])  # closes its log file
    return service


def readyz(running: RunningStack) -> tuple[int, dict[str, Any]]:
    with running.client() as client:
        response = client.get("/readyz")
    return response.status_code, response.json()


def wait_ready(running: RunningStack, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = readyz(running)
        if status == 200:
            return body
        time.sleep(0.1)
    raise AssertionError(f"/readyz not ready within {timeout_s} s: {body}")


def assert_logged_as_refused(running: RunningStack, answers: list[Answer]) -> None:
    """Each 503 left exactly one decision record: an error, nothing after it."""
    for answer in answers:
        assert answer.decision_id is not None, answer
        rows = running.audit_rows(answer.decision_id)
        assert [(r["kind"], r["outcome"], r["status"], r["code"]) for r in rows] == [
            ("decision", "error", 503, "policy_unavailable")
        ]


def assert_ran_after_an_allow(running: RunningStack, answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.decision_id is not None, answer
        rows = running.audit_rows(answer.decision_id)
        assert [r["kind"] for r in rows] == ["decision", "receipt"]
        assert rows[0]["outcome"] == "allow"


def test_opa_killed_during_a_burst_fails_closed_and_recovers(own_stack: RunningStack) -> None:
    before = own_stack.tool_counts("calculator.add")
    audit_before = len(all_audit_rows(own_stack.settings.gateway.audit_db))
    opa: Service | None = None
    with Burst(own_stack, ADD, {"a": 2, "b": 3}, workers=6, max_calls=600) as burst:
        burst.wait_for("calls answered", lambda a: sum(x.status == 200 for x in a) >= 10)

        burst.phase = "opa_dead"
        opa = kill(own_stack, "opa")
        burst.wait_for(
            "the breaker refusing calls",
            lambda a: any(x.phase == "opa_dead" and x.cause == "breaker_open" for x in a),
        )
        status, ready = readyz(own_stack)
        assert status == 503
        assert ready["checks"]["opa"] is False
        assert ready["policy_breaker"]["state"] == "open"

        burst.phase = "opa_back"
        restart(own_stack, opa)  # the same argv: the same port, the same bundle
        burst.wait_for(
            "calls succeeding again",
            lambda a: sum(x.phase == "opa_back" and x.status == 200 for x in a) >= 10,
        )
        answers = burst.stop()

    ready_again = wait_ready(own_stack)
    assert ready_again["checks"]["opa"] is True
    assert ready_again["policy_breaker"] == {"state": "closed", "consecutive_failures": 0}

    # Every call got an answer: it ran (after an allow) or was refused (and logged).
    ran = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert all(a.status == 503 and a.error_code == "policy_unavailable" for a in refused), [
        (a.status, a.body) for a in refused
    ]
    assert {a.cause for a in refused} <= {"opa_unreachable", "opa_timeout", "breaker_open"}
    assert all(a.body["ok"] is True and a.body["result"] == {"sum": 5} for a in ran)
    assert_ran_after_an_allow(own_stack, ran)
    assert_logged_as_refused(own_stack, refused)

    # The tool ran exactly once per allowed call, never for a refused one, and the
    # store holds a decision for every call plus a receipt for every call that ran.
    successes, errors = own_stack.tool_counts("calculator.add")
    assert (successes - before[0], errors - before[1]) == (len(ran), 0)
    rows = all_audit_rows(own_stack.settings.gateway.audit_db)[audit_before:]
    assert sum(r["kind"] == "decision" for r in rows) == len(answers)
    assert sum(r["kind"] == "receipt" for r in rows) == len(ran)
    assert receipts_without_an_allow_before_them(rows) == []

    log = (own_stack.root / "logs" / "gateway.log").read_text()
    events = [json.loads(line).get("event") for line in log.splitlines() if line.startswith("{")]
    assert "breaker_opened" in events
    assert "breaker_closed" in events


def test_slow_opa_is_denied_within_the_timeout_and_the_breaker_stops_asking(
    own_stack: RunningStack,
) -> None:
    """A real slow peer at OPA's address: it answers /health, holds every decision."""
    before = own_stack.tool_counts("calculator.add")
    opa = kill(own_stack, "opa")
    port = own_stack.settings.opa.url.port
    try:
        with SlowOpa(port) as peer:
            first = own_stack.invoke("calculator", "add", {"a": 1, "b": 1})
            # Denied on the gateway's deadline while the peer still held the request.
            assert (peer.received, peer.answered) == (1, 0)
            assert first.status_code == 503
            assert first.json()["error"]["cause"] == "opa_timeout"

            # More timeouts open the breaker; from then on a call is refused without
            # reaching the peer (a probe after each cool-down may still go through).
            refused = None
            for _ in range(10):
                asked_before = peer.received
                response = own_stack.invoke("calculator", "add", {"a": 1, "b": 1})
                assert response.status_code == 503
                if response.json()["error"]["cause"] == "breaker_open":
                    refused = response
                    assert peer.received == asked_before
                    break
            assert refused is not None, "the breaker never opened"
            assert int(refused.headers["Retry-After"]) >= 1
            assert "try it again in" in refused.json()["error"]["message"]
            assert peer.answered == 0
            assert_logged_as_refused(own_stack, [Answer("slow", 503, first.json())])
            assert_logged_as_refused(own_stack, [Answer("slow", 503, refused.json())])
    finally:
        restart(own_stack, opa)
    # The peer's late "allow" answers (sent when it was released) ran nothing.
    assert own_stack.tool_counts("calculator.add") == before
    wait_ready(own_stack)
