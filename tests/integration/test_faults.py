"""Faults in the stack's parts: each is contained, logged, and fails closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import RunningStack, start_stack, stop_stack

from regate.supervisor import Service, stop_services

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_stack() -> Iterator[RunningStack]:
    """A stack of this module's own, since these tests stop its parts."""
    running = start_stack("regate-faults-")
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
