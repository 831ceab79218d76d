"""Decision records shaped like the pipeline's, for the decision log's tests (both stores)."""

from __future__ import annotations

from typing import Any

from gateway.audit import AuditStore


def decision(
    decision_id: str, *, caller: str, agent: str, tool: str, outcome: str
) -> dict[str, Any]:
    """A decision record shaped like the pipeline's (gateway/pipeline.py `Trail.record`)."""
    return {
        "decision_id": decision_id,
        "request_id": "r-" + decision_id,
        "time": "2026-11-22T10:00:00Z",
        "outcome": outcome,
        "status": {"allow": 200, "deny": 403, "error": 503}[outcome],
        "code": {"allow": "allowed", "deny": "policy_denied", "error": "policy_unavailable"}[
            outcome
        ],
        "message": "",
        "caller": {"sub": caller, "iss": "https://issuer.test"},
        "target": {"agent_id": agent, "version": "1.0.0"},
        "tool": tool,
        "source_ip": "127.0.0.1",
        "policy": {"outcome": outcome, "reasons": [], "policy_revision": "rev-7"},
        "input": {"arguments": {"a": 1}},
        "stages_ms": {"policy": 1.5},
    }


ROWS = [
    ("d1", "alice", "calculator", "add", "allow"),
    ("d2", "bob", "calculator", "add", "deny"),
    ("d3", "alice", "ops", "shell", "deny"),
    ("d4", "alice", "calculator", "stats", "allow"),
    ("d5", "carol", "calculator", "add", "error"),
]


async def fill(store: AuditStore) -> None:
    """Five decisions (two allowed and run, one of them failing), and one admin record."""
    for decision_id, caller, agent, tool, outcome in ROWS:
        await store.append(
            "decision",
            decision_id,
            decision(decision_id, caller=caller, agent=agent, tool=tool, outcome=outcome),
        )
        if outcome == "allow":
            ok = decision_id == "d1"
            await store.append(
                "receipt", decision_id, {"decision_id": decision_id, "ok": ok, "status": 200}
            )
    # Records of other kinds under their own ids are not decisions.
    await store.append("admin", "a1", {"action": "approve", "actor": "alice"})


# (query, the decision ids it finds, newest first)
FILTER_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({}, ["d5", "d4", "d3", "d2", "d1"]),  # newest first, decisions only
    ({"caller": "alice"}, ["d4", "d3", "d1"]),
    ({"agent": "ops"}, ["d3"]),
    ({"tool": "add"}, ["d5", "d2", "d1"]),
    ({"outcome": "deny"}, ["d3", "d2"]),
    ({"outcome": "error"}, ["d5"]),
    ({"caller": "alice", "agent": "calculator", "outcome": "allow"}, ["d4", "d1"]),
    ({"caller": "nobody"}, []),
    ({"caller": "alice' OR '1'='1"}, []),  # values are parameters, never SQL
]
