"""Approvals of calls (`gateway.call_approvals`): the rules over a real SQLite store.

Real call-approval and audit stores in a temp dir, a clock the test moves; no sockets.
The flow through the real gateway is in tests/integration/test_call_approvals.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.audit import AuditStore, verify_chain
from gateway.call_approval_store import CallApprovalStore
from gateway.call_approvals import Binding, CallApprovals, admin_view, caller_view
from gateway.errors import (
    AuditUnavailable,
    CallApprovalDecided,
    CallApprovalDenied,
    CallApprovalExpired,
    CallApprovalMismatch,
    CallApprovalNotFound,
    CallApprovalUndecided,
    CallApprovalUsed,
    TooManyPendingApprovals,
)
from regate.errors import BadRequest

T = TypeVar("T")
START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
BINDING = Binding(
    caller_iss="https://issuer.test",
    caller_sub="alice",
    agent_id="janitor",
    manifest_sha256="a" * 64,
    tool="purge",
    arguments_sha256="b" * 64,
)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = Clock()

    def run(self, scenario: Callable[[CallApprovals], Awaitable[T]], **options: Any) -> T:
        async def main() -> T:
            audit = AuditStore(self.root / "audit.sqlite3")
            store = CallApprovalStore(self.root / "call_approvals.sqlite3")
            approvals = CallApprovals(
                store,
                audit,
                ttl_s=options.get("ttl_s", 600),
                max_pending_per_caller=options.get("max_pending", 5),
                now=self.clock,
            )
            try:
                return await scenario(approvals)
            finally:
                await store.close()
                await audit.close()

        return asyncio.run(main())

    def events(self, approval_id: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.root / "audit.sqlite3")
        try:
            rows = conn.execute(
                "SELECT kind, body FROM audit_log WHERE decision_id = ? ORDER BY seq",
                (approval_id,),
            ).fetchall()
        finally:
            conn.close()
        assert {kind for kind, _ in rows} <= {"call_approval"}
        return [json.loads(body) for _, body in rows]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def park(approvals: CallApprovals, binding: Binding = BINDING) -> str:
    approval = await approvals.park(
        decision_id="d-park",
        binding=binding,
        agent_version="1.0.0",
        masked_arguments={"path": "/scratch", "token": "[redacted]"},
        reasons=[{"code": "approval_required", "message": "destructive"}],
    )
    return approval.approval_id


def test_the_whole_life_of_an_approval(world: World) -> None:
    async def scenario(approvals: CallApprovals) -> str:
        approval_id = await park(approvals)
        assert (await approvals.get(approval_id)).status == "pending"
        with pytest.raises(CallApprovalUndecided):
            await approvals.redeem(approval_id, BINDING, "d-early")
        world.clock.now += timedelta(seconds=10)
        approved = await approvals.approve(approval_id, "ops@example.com", " ticket 7 ")
        assert (approved.status, approved.decided_by, approved.decision_reason) == (
            "approved",
            "ops@example.com",
            "ticket 7",
        )
        used = await approvals.redeem(approval_id, BINDING, "d-replay")
        assert (used.status, used.used_by_decision) == ("used", "d-replay")
        with pytest.raises(CallApprovalUsed):
            await approvals.redeem(approval_id, BINDING, "d-again")
        assert [a.approval_id for a in await approvals.list("used")] == [approval_id]
        assert await approvals.list("pending") == []
        return approval_id

    approval_id = world.run(scenario)

    events = world.events(approval_id)
    assert [(e["event"], e["actor"]) for e in events] == [
        ("parked", "alice"),
        ("approved", "ops@example.com"),
        ("used", "alice"),
    ]
    assert events[0]["arguments"] == {"path": "/scratch", "token": "[redacted]"}
    assert events[1]["reason"] == "ticket 7"
    assert events[2]["decision_id"] == "d-replay"
    assert verify_chain(world.root / "audit.sqlite3").ok


def test_a_replay_the_log_refuses_does_not_spend_the_approval(world: World) -> None:
    """The 'used' record is written after the approval is spent; if the audit store
    refuses it (here: another writer holds its lock), the call is refused (503) and
    the approval is approved again, so nothing is half-done."""

    async def scenario(approvals: CallApprovals) -> str:
        approval_id = await park(approvals)
        await approvals.approve(approval_id, "ops", "ticket 8")
        blocker = sqlite3.connect(world.root / "audit.sqlite3", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(AuditUnavailable):
                await approvals.redeem(approval_id, BINDING, "d-refused")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (await approvals.get(approval_id)).status == "approved"
        used = await approvals.redeem(approval_id, BINDING, "d-replay")
        assert used.used_by_decision == "d-replay"
        return approval_id

    approval_id = world.run(scenario)
    assert [e["event"] for e in world.events(approval_id)] == ["parked", "approved", "used"]


def test_denied_is_final(world: World) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        approval_id = await park(approvals)
        await approvals.deny(approval_id, "ops", "no")
        with pytest.raises(CallApprovalDenied, match="was denied: no") as caught:
            await approvals.redeem(approval_id, BINDING, "d-1")
        assert caught.value.details["reason"] == "no"
        with pytest.raises(CallApprovalDecided) as late:
            await approvals.approve(approval_id, "ops", "yes")
        assert late.value.details["status"] == "denied"

    world.run(scenario)


@pytest.mark.parametrize("decided", [False, True], ids=["pending", "approved"])
def test_expiry_is_a_deny_and_is_recorded_once(world: World, decided: bool) -> None:
    async def scenario(approvals: CallApprovals) -> str:
        approval_id = await park(approvals)
        if decided:
            await approvals.approve(approval_id, "ops", "ok")
        world.clock.now = START + timedelta(seconds=60)  # the ttl is 60 s: expired
        with pytest.raises(CallApprovalExpired):
            await approvals.redeem(approval_id, BINDING, "d-late")
        assert (await approvals.get(approval_id)).status == "expired"
        assert [a.approval_id for a in await approvals.list("expired")] == [approval_id]
        with pytest.raises(CallApprovalDecided):
            await approvals.approve(approval_id, "ops", "too late")
        return approval_id

    approval_id = world.run(scenario, ttl_s=60)

    events = [e["event"] for e in world.events(approval_id)]
    assert events == ["parked", *(["approved"] if decided else []), "expired"]


def test_one_second_before_expiry_still_counts(world: World) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        approval_id = await park(approvals)
        await approvals.approve(approval_id, "ops", "ok")
        world.clock.now = START + timedelta(seconds=59)
        assert (await approvals.redeem(approval_id, BINDING, "d-1")).status == "used"

    world.run(scenario, ttl_s=60)


def test_listing_shows_what_expired_as_expired(world: World) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        old = await park(approvals)
        world.clock.now += timedelta(seconds=61)
        new = await park(approvals)
        assert [a.approval_id for a in await approvals.list("pending")] == [new]
        assert [a.status for a in await approvals.list()] == ["pending", "expired"]
        assert (await approvals.get(old)).status == "expired"

    world.run(scenario, ttl_s=60)


@pytest.mark.parametrize(
    ("change", "mismatched"),
    [
        pytest.param({"arguments_sha256": "c" * 64}, ["arguments"], id="arguments"),
        pytest.param({"tool": "other"}, ["tool"], id="tool"),
        pytest.param({"agent_id": "vault"}, ["agent_id"], id="agent"),
        pytest.param({"manifest_sha256": "d" * 64}, ["manifest_sha256"], id="manifest-changed"),
        pytest.param(
            {"tool": "x", "arguments_sha256": "c" * 64}, ["tool", "arguments"], id="two-fields"
        ),
    ],
)
def test_a_replay_must_be_the_approved_call(
    world: World, change: dict[str, str], mismatched: list[str]
) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        approval_id = await park(approvals)
        await approvals.approve(approval_id, "ops", "ok")
        other = Binding(**{**BINDING.__dict__, **change})
        with pytest.raises(CallApprovalMismatch) as caught:
            await approvals.redeem(approval_id, other, "d-1")
        assert caught.value.details["mismatched"] == mismatched
        assert (await approvals.get(approval_id)).status == "approved"  # untouched

    world.run(scenario)


@pytest.mark.parametrize(
    "caller",
    [{"caller_sub": "mallory"}, {"caller_iss": "https://other-issuer.test"}],
    ids=["other-sub", "same-sub-other-issuer"],
)
def test_another_callers_approval_is_not_found(world: World, caller: dict[str, str]) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        approval_id = await park(approvals)
        await approvals.approve(approval_id, "ops", "ok")
        other = Binding(**{**BINDING.__dict__, **caller})
        with pytest.raises(CallApprovalNotFound):
            await approvals.redeem(approval_id, other, "d-1")
        with pytest.raises(CallApprovalNotFound):
            await approvals.for_caller(approval_id, other.caller_iss, other.caller_sub)
        owner = await approvals.for_caller(approval_id, BINDING.caller_iss, BINDING.caller_sub)
        assert owner.status == "approved"

    world.run(scenario)


def test_concurrent_redemptions_from_two_processes_spend_it_once(world: World) -> None:
    """Two gateways (two stores, two services) on one file: exactly one replay runs."""

    async def scenario(first: CallApprovals) -> list[str]:
        approval_id = await park(first)
        await first.approve(approval_id, "ops", "ok")
        store = CallApprovalStore(world.root / "call_approvals.sqlite3")
        second = CallApprovals(
            store, first.audit, ttl_s=600, max_pending_per_caller=5, now=world.clock
        )
        try:
            outcomes = await asyncio.gather(
                *(
                    service.redeem(approval_id, BINDING, f"d-{i}")
                    for i, service in enumerate([first, second] * 4)
                ),
                return_exceptions=True,
            )
        finally:
            await store.close()
        return [type(o).__name__ for o in outcomes]

    outcomes = world.run(scenario)

    assert sorted(outcomes) == ["CallApproval"] + ["CallApprovalUsed"] * 7


@pytest.mark.parametrize("reason", ["", "   ", "x" * 1001])
def test_a_decision_needs_a_reason(world: World, reason: str) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        approval_id = await park(approvals)
        with pytest.raises(BadRequest, match="give a reason"):
            await approvals.deny(approval_id, "ops", reason)
        assert (await approvals.get(approval_id)).status == "pending"

    world.run(scenario)


def test_a_decision_needs_an_actor(world: World) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        approval_id = await park(approvals)
        with pytest.raises(BadRequest, match="identity"):
            await approvals.approve(approval_id, "", "ok")

    world.run(scenario)


def test_a_caller_may_have_only_so_many_pending(world: World) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        for _ in range(2):
            await park(approvals)
        with pytest.raises(TooManyPendingApprovals) as caught:
            await park(approvals)
        assert caught.value.status == 429
        # Another caller is not held back by alice's queue.
        await park(approvals, Binding(**{**BINDING.__dict__, "caller_sub": "bob"}))
        # What expired no longer holds a place.
        world.clock.now += timedelta(seconds=601)
        await park(approvals)

    world.run(scenario, max_pending=2)


@pytest.mark.parametrize("approval_id", ["nope", "", "../../etc", "A" * 36])
def test_malformed_ids_are_not_found(world: World, approval_id: str) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        with pytest.raises(CallApprovalNotFound):
            await approvals.get(approval_id)

    world.run(scenario)


def test_list_refuses_an_unknown_status(world: World) -> None:
    async def scenario(approvals: CallApprovals) -> None:
        with pytest.raises(BadRequest, match="status must be one of"):
            await approvals.list("maybe")

    world.run(scenario)


def test_views_say_what_each_side_may_know(world: World) -> None:
    async def scenario(approvals: CallApprovals) -> tuple[dict[str, Any], dict[str, Any]]:
        approval_id = await park(approvals)
        approval = await approvals.approve(approval_id, "ops@example.com", "fine")
        return caller_view(approval), admin_view(approval)

    mine, theirs = world.run(scenario)

    assert mine["reason"] == "fine"
    assert "decided_by" not in mine  # who decided is for admins
    assert "arguments" not in mine
    assert theirs["decided_by"] == "ops@example.com"
    assert theirs["arguments"] == {"path": "/scratch", "token": "[redacted]"}
    assert theirs["reasons"] == [{"code": "approval_required", "message": "destructive"}]


def test_the_store_file_is_private(world: World) -> None:
    world.run(park)
    assert (world.root / "call_approvals.sqlite3").stat().st_mode & 0o077 == 0
