"""The shadow policy's contract (gateway/shadow.py): it never changes the outcome,
never holds a call more than `max_wait_s` past the enforced answer, and every
failure of its own is recorded, not enforced.

OPA's shadow endpoint is played by a scripted peer on loopback
(tests/scripted_peer.py) because the cases are ones a real OPA does not produce on
demand (a slow shadow beside a fast enforced answer, 500s, bodies without `result`);
agreement and disagreement against the real OPA are in
tests/integration/test_policy_change.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from conftest import free_port
from scripted_peer import Action, ScriptedPeer, answer, stall

from gateway.audit import AuditRecord
from gateway.errors import PolicyUnavailable
from gateway.policy import Decision, Reason
from gateway.shadow import SHADOW_PATH, ShadowPolicy
from gateway.sidecar_http import sidecar_session
from regate.audit_query import shadow_verdict
from regate.settings import Address

INPUT = {"caller": {"sub": "alice"}, "target": {"agent_id": "calc"}, "tool": {"name": "add"}}
ALLOW = Decision("allow", (Reason("granted", "ok"),), {}, "rev-1")


def opa_answer(result: Any, revision: str = "rev-2") -> dict[str, Any]:
    return {"result": result, "provenance": {"bundles": {"b": {"revision": revision}}}}


@pytest.fixture
def peer() -> Iterator[ScriptedPeer]:
    with ScriptedPeer() as scripted:
        yield scripted


async def enforced_allow(policy_input: Mapping[str, Any]) -> Decision:
    return ALLOW


def shadow_for(
    session: Any, port: int, *, sample_rate: float = 1.0, max_wait_s: float = 1.0, draw: float = 0.0
) -> ShadowPolicy:
    return ShadowPolicy(
        session,
        f"http://127.0.0.1:{port}",
        sample_rate=sample_rate,
        max_wait_s=max_wait_s,
        timeout_s=5.0,
        sample=lambda: draw,
    )


def run(port: int, **kwargs: Any) -> tuple[Decision, dict[str, Any] | None, ShadowPolicy]:
    async def go() -> tuple[Decision, dict[str, Any] | None, ShadowPolicy]:
        async with sidecar_session(Address(host="127.0.0.1", port=port)) as session:
            shadow = shadow_for(session, port, **kwargs)
            decision, record = await shadow.decide_beside(enforced_allow, INPUT, "d-1")
        return decision, record, shadow

    return asyncio.run(asyncio.wait_for(go(), timeout=20))


def test_a_disagreement_is_recorded_and_counted_but_not_obeyed(peer: ScriptedPeer) -> None:
    deny = {"outcome": "deny", "reasons": [{"code": "no_grant", "message": "m"}]}
    peer.on("POST", SHADOW_PATH, answer(json_body=opa_answer(deny)))

    decision, record, shadow = run(peer.port)

    assert [s.target for s in peer.seen] == [SHADOW_PATH + "?provenance=true"]
    assert decision is ALLOW
    assert record == {
        "outcome": "deny",
        "reasons": [{"code": "no_grant", "message": "m"}],
        "policy_revision": "rev-2",
        "agrees": False,
    }
    assert shadow.counts.as_json() == {
        "sampled": 1,
        "agreed": 0,
        "disagreed": 1,
        "failed": 0,
        "transitions": {"allow->deny": 1},
    }


def test_an_agreement_is_counted(peer: ScriptedPeer) -> None:
    allow = {"outcome": "allow", "reasons": [{"code": "granted", "message": "m"}]}
    peer.on("POST", SHADOW_PATH, answer(json_body=opa_answer(allow)))
    _, record, shadow = run(peer.port)
    assert record is not None
    assert record["agrees"] is True
    assert (shadow.counts.agreed, shadow.counts.disagreed) == (1, 0)


@pytest.mark.parametrize(
    ("action", "error"),
    [
        pytest.param(answer(json_body={}), "undefined", id="no-shadow-package"),
        pytest.param(answer(500, body=b"boom"), "opa_error", id="opa-500"),
        pytest.param(answer(body=b"not json"), "opa_bad_json", id="not-json"),
        pytest.param(
            answer(json_body=opa_answer({"outcome": "maybe"})),
            "decision_malformed",
            id="bad-outcome",
        ),
    ],
)
def test_a_failing_shadow_is_recorded_never_enforced(
    peer: ScriptedPeer, action: Action, error: str
) -> None:
    peer.on("POST", SHADOW_PATH, action)
    decision, record, shadow = run(peer.port)

    assert decision is ALLOW
    assert record == {"error": error, "agrees": None}
    assert (shadow.counts.sampled, shadow.counts.failed) == (1, 1)


def test_an_unreachable_shadow_is_recorded() -> None:
    decision, record, _ = run(free_port())  # nothing listens there
    assert decision is ALLOW
    assert record == {"error": "opa_unreachable", "agrees": None}


def test_a_late_shadow_is_abandoned_after_max_wait(peer: ScriptedPeer) -> None:
    peer.on("POST", SHADOW_PATH, stall())  # held until the test ends
    decision, record, shadow = run(peer.port, max_wait_s=0.05)
    assert decision is ALLOW
    assert record == {"error": "late", "agrees": None}
    assert shadow.counts.failed == 1


def test_the_enforced_failure_is_raised_unchanged_and_the_shadow_dropped(
    peer: ScriptedPeer,
) -> None:
    peer.on("POST", SHADOW_PATH, stall())

    async def enforced_down(policy_input: Mapping[str, Any]) -> Decision:
        await asyncio.to_thread(peer.arrived.wait, 10)  # the shadow request is in flight
        raise PolicyUnavailable("down", cause="opa_unreachable")

    async def go() -> ShadowPolicy:
        async with sidecar_session(Address(host="127.0.0.1", port=peer.port)) as session:
            shadow = shadow_for(session, peer.port)
            with pytest.raises(PolicyUnavailable, match="down"):
                await shadow.decide_beside(enforced_down, INPUT, "d-1")
        return shadow

    shadow = asyncio.run(asyncio.wait_for(go(), timeout=20))
    assert [s.path for s in peer.seen] == [SHADOW_PATH]
    assert shadow.counts.sampled == 0  # nothing to compare with


@pytest.mark.parametrize(("rate", "draw", "asked"), [(0.25, 0.2, True), (0.25, 0.3, False)])
def test_only_the_sample_asks_the_shadow(
    peer: ScriptedPeer, rate: float, draw: float, asked: bool
) -> None:
    peer.on("POST", SHADOW_PATH, answer(json_body=opa_answer({"outcome": "allow"})))
    _, record, _ = run(peer.port, sample_rate=rate, draw=draw)
    assert (record is not None) is asked
    assert bool(peer.seen) is asked


@pytest.mark.parametrize(
    ("kind", "body", "verdict"),
    [
        ("decision", {"shadow": {"outcome": "allow", "agrees": True}}, "agreed"),
        ("decision", {"shadow": {"outcome": "deny", "agrees": False}}, "disagreed"),
        ("decision", {"shadow": {"error": "late", "agrees": None}}, "failed"),
        ("decision", {"outcome": "allow"}, None),  # not sampled
        ("receipt", {"shadow": {"agrees": False}}, None),
    ],
)
def test_export_filter_verdicts(kind: str, body: dict[str, Any], verdict: str | None) -> None:
    record = AuditRecord(1, kind, "d-1", "2026-11-22T00:00:00+00:00", body, "0" * 64, "1" * 64)
    assert shadow_verdict(record) == verdict
