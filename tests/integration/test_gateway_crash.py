"""`kill -9` the gateway during a burst of calls: no answered call loses its record.

A decision is acknowledged only once it is durable (gateway/audit.py), so whatever a
client saw answered must be in the store after the crash, the chain must verify with
the real `regate audit verify`, and a restarted gateway must carry the same chain on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from burst import Burst, all_audit_rows, receipts_without_an_allow_before_them, summary
from conftest import RunningStack, start_stack, stop_stack

from regate.supervisor import Service, stop_services

pytestmark = pytest.mark.integration

WORKERS = 8


@pytest.fixture(scope="module")
def own_stack() -> Iterator[RunningStack]:
    """A stack whose gateway this module kills; checkpoints often, so a crash lands
    between two of them."""
    running = start_stack("regate-crash-", gateway_config="audit_checkpoint_records = 8")
    try:
        yield running
    finally:
        stop_stack(running)


def audit_verify(running: RunningStack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regate", "audit", "verify", "--config", str(running.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def restart_gateway(running: RunningStack, dead: Service) -> Service:
    running.stack.services.remove(dead)
    fresh = Service(dead.name, dead.argv, dead.address, dead.ready_path)
    running.stack.start_service(fresh, timeout_s=30)
    return fresh


def test_gateway_killed_mid_burst_keeps_every_answered_record(own_stack: RunningStack) -> None:
    db = own_stack.settings.gateway.audit_db
    gateway = own_stack.stack.service("gateway")
    assert gateway.process is not None
    with Burst(own_stack, "/v1/invoke/calculator/add", {"a": 4, "b": 5}, workers=WORKERS) as burst:
        burst.wait_for("calls answered", lambda a: sum(x.status == 200 for x in a) >= 20)
        burst.phase = "killed"
        gateway.process.send_signal(signal.SIGKILL)  # only the gateway this test started
        gateway.process.wait(10)
        burst.wait_for(
            "every worker cut off", lambda a: sum(x.status is None for x in a) == WORKERS
        )
        answers = burst.stop()
    stop_services([gateway])  # closes its log file
    assert gateway.process.returncode == -signal.SIGKILL

    answered = [a for a in answers if a.status is not None]
    assert len(answered) >= 20, summary(answers)
    rows = all_audit_rows(db)
    by_id: dict[str, list[str]] = {}
    for row in rows:
        by_id.setdefault(row["decision_id"], []).append(row["kind"])
    for answer in answered:
        assert answer.status == 200, (answer.status, answer.body)
        assert answer.decision_id is not None
        # Answered means both records were durable first: the decision, then the receipt.
        assert by_id.get(answer.decision_id) == ["decision", "receipt"], answer.decision_id
    assert receipts_without_an_allow_before_them(rows) == []

    crashed = audit_verify(own_stack)
    assert crashed.returncode == 0, crashed.stdout + crashed.stderr
    assert crashed.stdout.startswith(f"OK: {len(rows)} records")

    # A restarted gateway appends to the same chain, and the whole still verifies.
    gateway = restart_gateway(own_stack, gateway)
    last = rows[-1]
    after = [own_stack.invoke("calculator", "add", {"a": n, "b": 1}) for n in range(3)]
    assert [r.status_code for r in after] == [200, 200, 200]
    new_rows = all_audit_rows(db)[len(rows) :]
    assert new_rows[0]["seq"] == last["seq"] + 1
    new_ids = {r["decision_id"] for r in new_rows}
    assert {r.json()["decision_id"] for r in after} <= new_ids
    resumed = audit_verify(own_stack)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.startswith(f"OK: {len(rows) + len(new_rows)} records")
