"""The audit trail on a real stack: receipts chained to decisions, signed checkpoints
(every N records and on clean shutdown), `regate audit export` and `verify`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningStack, start_stack, stop_stack

from gateway.audit import record_hash
from regate import crypto

pytestmark = pytest.mark.integration
EVERY = 4


def regate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def own_stack() -> Iterator[RunningStack]:
    """Checkpoints every few records, and a stack this module stops itself."""
    running = start_stack("regate-trail-", gateway_config=f"audit_checkpoint_records = {EVERY}")
    try:
        yield running
    finally:
        stop_stack(running)


def export(stack: RunningStack, *args: str) -> list[dict[str, Any]]:
    result = regate("audit", "export", "--config", str(stack.config), *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_receipt_names_its_decision_record(own_stack: RunningStack) -> None:
    response = own_stack.invoke("calculator", "add", {"a": 2, "b": 3})
    assert response.status_code == 200, response.text
    decision_id = response.json()["decision_id"]

    lines = [r for r in export(own_stack, "--since", "10m") if r["decision_id"] == decision_id]

    assert [r["kind"] for r in lines] == ["decision", "receipt"]
    decision, receipt = lines
    assert receipt["body"]["decision_hash"] == decision["hash"]
    assert receipt["body"]["decision_seq"] == decision["seq"]
    assert receipt["body"]["ok"] is True


def test_export_filters_by_kind_and_since_and_keeps_the_chain(own_stack: RunningStack) -> None:
    for n in range(3):
        own_stack.invoke("calculator", "add", {"a": n, "b": 1})
    own_stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=None)  # a 401 decision

    everything = export(own_stack)
    receipts = export(own_stack, "--kind", "receipt")
    future = export(own_stack, "--since", "2999-01-01T00:00:00Z")

    assert future == []
    assert receipts
    assert {r["kind"] for r in receipts} == {"receipt"}
    assert {r["kind"] for r in everything} >= {"decision", "receipt", "manifest"}
    # Everything a record's hash covers is in the export: the chain recomputes from it.
    prev = "0" * 64
    for line in everything:
        assert line["prev_hash"] == prev
        assert line["hash"] == record_hash(
            line["seq"],
            line["kind"],
            line["decision_id"],
            line["recorded_at"],
            line["body"],
            prev,
        )
        prev = line["hash"]


def test_export_refuses_a_bad_since(own_stack: RunningStack) -> None:
    result = regate("audit", "export", "--config", str(own_stack.config), "--since", "yesterday")
    assert result.returncode == 2
    assert "give an RFC 3339 time with its offset" in result.stderr


def test_checkpoints_while_running_and_on_clean_shutdown(own_stack: RunningStack) -> None:
    for n in range(EVERY):
        assert own_stack.invoke("calculator", "add", {"a": n, "b": 0}).status_code == 200
    live = regate("audit", "verify", "--config", str(own_stack.config))
    assert live.returncode == 0, live.stdout + live.stderr
    assert "signed checkpoints hold" in live.stdout

    own_stack.stack.stop()  # SIGTERM: the gateway closes its store, signing the head

    db = own_stack.settings.gateway.audit_db
    conn = sqlite3.connect(db)
    try:
        (records,) = conn.execute("SELECT MAX(seq) FROM audit_log").fetchone()
        (last,) = conn.execute("SELECT MAX(record_seq) FROM audit_checkpoints").fetchone()
        (token,) = conn.execute(
            "SELECT token FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    assert last == records
    keys = crypto.load_jwks(own_stack.settings.gateway.gateway_jwks)
    assert (
        json.loads(crypto.verify_jws(token, keys, typ="regate-audit-checkpoint+jws"))["seq"]
        == records
    )
    done = regate("audit", "verify", "--config", str(own_stack.config))
    assert done.returncode == 0, done.stdout
    assert f"the newest covers {records} of {records} records" in done.stdout

    # Cut the tail: the checkpoint signed at shutdown shows it.
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_log_no_delete")
        conn.execute("DELETE FROM audit_log WHERE seq = ?", (records,))
    finally:
        conn.close()
    cut = regate("audit", "verify", "--config", str(own_stack.config))
    assert cut.returncode == 1
    assert f"TAMPERED: record {records}: the log was truncated" in cut.stdout
    assert f"but only {records - 1} remain" in cut.stdout


def test_gateway_jwks_is_beside_the_grant_key(own_stack: RunningStack) -> None:
    jwks = own_stack.settings.gateway.gateway_jwks
    assert jwks == Path(own_stack.settings.runner.grant_jwks)
    assert jwks.exists()


def test_checkpoint_command_prints_a_token_that_anchors_verify(
    own_stack: RunningStack, tmp_path: Path
) -> None:
    # Runs after the shutdown test above: the store is closed and its head signed.
    printed = regate("audit", "checkpoint", "--config", str(own_stack.config))
    assert printed.returncode == 0, printed.stderr
    anchor = tmp_path / "anchor.jws"
    anchor.write_text(printed.stdout)
    assert "covers records 1.." in printed.stderr

    # Take the tail and every checkpoint with it: only the anchor kept elsewhere shows it.
    db = own_stack.settings.gateway.audit_db
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_checkpoints_no_delete")
        conn.execute("DELETE FROM audit_checkpoints")
    finally:
        conn.close()
    alone = regate("audit", "verify", "--config", str(own_stack.config))
    assert alone.returncode == 0, alone.stdout
    anchored = regate("audit", "verify", "--config", str(own_stack.config), "--anchor", str(anchor))
    assert anchored.returncode == 1
    assert "the log was truncated" in anchored.stdout
