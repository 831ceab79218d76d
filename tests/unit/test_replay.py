"""`regate policy replay` against the real opa binary: recorded inputs, a working copy."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from gateway.audit import AuditStore
from gateway.audit_stores import SqliteSource
from regate.cli import main
from regate.opa import find_opa
from regate.replay import evaluate, recorded_decisions, replay

NOW = "2026-11-22T12:00:00Z"


def policy_input(caller: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_version": 1,
        "caller": {"sub": caller, "iss": "https://issuer.test", "claims": {"sub": caller}, "act": None},
        "target": {"agent_id": "calculator", "version": "1.0.0", "manifest_sha256": "00", "publisher": "p"},
        "tool": {"name": tool, "permissions": [], "limits": {"timeout_s": 5, "memory_mb": 64, "output_kb": 64, "pids": 8}},
        "arguments": arguments,
        "request": {"id": "r", "time": NOW, "source_ip": "127.0.0.1", "source_ip_from": "peer", "method": "POST", "path": "/v1/invoke/calculator/add"},
        "usage": {"calls_last_minute": 0},
    }  # fmt: skip


def decision_body(caller: str, tool: str, outcome: str, **arguments: Any) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "caller": {"sub": caller, "iss": "https://issuer.test"},
        "target": {"agent_id": "calculator"},
        "tool": tool,
        "policy": {"outcome": outcome, "reasons": [], "obligations": {}, "policy_revision": "r1"},
        "input": policy_input(caller, tool, arguments),
    }


@pytest.fixture
def opa() -> str:
    return find_opa()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.sqlite3"
    bodies = [
        ("d-allowed", decision_body("test-client", "add", "allow", a=1, b=2)),
        ("d-denied", decision_body("nobody", "add", "deny")),
        ("d-masked", decision_body("test-client", "add", "allow", password="[redacted]")),
        # Refused before the policy was asked (a bad token): nothing to replay.
        ("d-401", {"outcome": "deny", "status": 401, "policy": None, "input": None}),
    ]

    async def write() -> None:
        store = AuditStore(path)
        try:
            for decision_id, body in bodies:
                await store.append("decision", decision_id, body)
            await store.append("receipt", "d-allowed", {"ok": True})
        finally:
            await store.close()

    asyncio.run(write())
    return path


@pytest.fixture
def working_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(REPO / "policies", copy)
    return copy


def revoke_test_client(policies: Path) -> None:
    data = json.loads((policies / "regate" / "data.json").read_text())
    data["grants"] = {
        agent: [g for g in grants if g.get("caller") != "test-client"]
        for agent, grants in data["grants"].items()
    }
    (policies / "regate" / "data.json").write_text(json.dumps(data))


def test_unchanged_policy_changes_nothing(db: Path, working_copy: Path, opa: str) -> None:
    report = replay(opa, working_copy, recorded_decisions(SqliteSource(db).select()))
    assert (report.replayed, report.skipped, report.changes) == (3, 1, [])


def test_a_revoked_grant_shows_as_allow_to_deny(
    db: Path, working_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    revoke_test_client(working_copy)

    code = main(["policy", "replay", "--since", "1h", "--dir", str(working_copy), "--db", str(db)])

    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("d-")]
    assert len(rows) == 2
    assert rows[0].startswith("d-allowed")
    assert "test-client" in rows[0]
    assert "calculator.add" in rows[0]
    assert "allow -> deny [no_grant]" in rows[0]
    assert rows[1].startswith("d-masked")
    assert "(masked arguments*)" in rows[1]
    assert "replayed 3 decisions" in out
    assert "2 would change, 1 unchanged; 1 skipped" in out
    assert "allow -> deny: 2" in out
    assert "replayed as '[redacted]'" in out


def test_fail_on_change_exits_1(db: Path, working_copy: Path) -> None:
    argv = ["policy", "replay", "--since", "1h", "--dir", str(working_copy), "--db", str(db)]
    assert main([*argv, "--fail-on-change"]) == 0
    revoke_test_client(working_copy)
    assert main([*argv, "--fail-on-change"]) == 1


def test_since_leaves_older_records_out(db: Path, working_copy: Path) -> None:
    revoke_test_client(working_copy)
    argv = ["policy", "replay", "--since", "2999-01-01T00:00:00Z", "--dir", str(working_copy)]
    assert main([*argv, "--db", str(db), "--fail-on-change"]) == 0


def test_a_broken_working_copy_is_an_error_that_says_so(
    db: Path, working_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (working_copy / "regate" / "authz" / "broken.rego").write_text(
        "package regate.authz\n\nx := \n"
    )

    code = main(["policy", "replay", "--since", "1h", "--dir", str(working_copy), "--db", str(db)])

    assert code == 2
    err = capsys.readouterr().err
    assert "opa eval could not evaluate the bundle" in err
    assert "regate policy test --dir" in err


def test_bad_arguments_are_refused(
    db: Path, tmp_path: Path, working_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "replay", "--since", "1h", "--dir", str(tmp_path), "--db", str(db)]) == 2
    assert "not a policy bundle" in capsys.readouterr().err
    assert (
        main(["policy", "replay", "--since", "soon", "--dir", str(working_copy), "--db", str(db)])
        == 2
    )
    assert "give an RFC 3339 time" in capsys.readouterr().err
    assert (
        main(
            [
                "policy",
                "replay",
                "--since",
                "1h",
                "--dir",
                str(working_copy),
                "--db",
                str(tmp_path / "no.db"),
            ]
        )
        == 2
    )
    assert "no audit store" in capsys.readouterr().err


def test_an_undefined_decision_keeps_its_place(working_copy: Path, opa: str) -> None:
    # A working copy whose decision is undefined for some inputs must not shift the
    # answers of the others.
    (working_copy / "regate" / "authz" / "authz.rego").write_text(
        (working_copy / "regate" / "authz" / "authz.rego")
        .read_text()
        .replace("default decision :=", "_unused_default :=")
    )
    inputs = [{"caller": {"sub": "x"}}, policy_input("test-client", "add", {"a": 1, "b": 1})]
    first, second = evaluate(opa, working_copy, inputs)
    assert first is None
    assert second is not None
    assert second["outcome"] == "allow"
