"""The OPA client (`gateway.policy`): every answer that is not a well-formed decision is a 503.

A scripted peer on loopback (tests/scripted_peer.py) stands in for OPA to produce what a
real OPA will not on demand: 500s, broken bodies, stalls and dropped connections.
The client is the gateway's own (`sidecar_session`, aiohttp), so what is tested is what runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from conftest import free_port
from scripted_peer import Action, ScriptedPeer, answer, decision, hang_up, stall

from gateway.breaker import CircuitBreaker
from gateway.errors import PolicyUnavailable
from gateway.policy import (
    DECISION_PATH,
    Decision,
    PolicyClient,
    Reason,
    parse_decision,
)
from gateway.sidecar_http import sidecar_session
from regate.settings import Address

POLICY_INPUT: dict[str, Any] = {
    "input_version": 1,
    "caller": {"sub": "alice"},
    "tool": {"name": "add"},
    "arguments": {"a": 1, "b": 2},
}
T = TypeVar("T")


def with_policy(
    port: int,
    use: Callable[[PolicyClient], Awaitable[T]],
    *,
    timeout_s: float = 0.5,
    breaker: CircuitBreaker | None = None,
) -> T:
    async def run() -> T:
        async with sidecar_session(Address(host="127.0.0.1", port=port)) as session:
            policy = PolicyClient(
                session, f"http://127.0.0.1:{port}", timeout_s=timeout_s, breaker=breaker
            )
            return await use(policy)

    return asyncio.run(run())


def decide(peer: ScriptedPeer, policy_input: dict[str, Any] = POLICY_INPUT) -> Decision:
    return with_policy(peer.port, lambda policy: policy.decide(policy_input))


@pytest.fixture
def peer() -> Any:
    with ScriptedPeer() as scripted:
        yield scripted


UNAVAILABLE: list[Any] = [
    pytest.param(answer(json_body={}), "decision_undefined", id="200-without-result-undefined"),
    pytest.param(answer(json_body={"decision_id": "x", "provenance": {}}), "decision_undefined", id="200-provenance-only"),
    pytest.param(answer(500, json_body={"code": "internal_error"}), "opa_error", id="http-500"),
    pytest.param(answer(400, json_body={"code": "invalid_parameter"}), "opa_error", id="http-400"),
    pytest.param(answer(204), "opa_error", id="http-204"),
    pytest.param(answer(body=b"<html>proxy</html>"), "opa_bad_json", id="non-json-body"),
    pytest.param(answer(body=b""), "opa_bad_json", id="empty-body"),
    pytest.param(answer(body=b'{"result": "\xff"}'), "opa_bad_json", id="not-utf8"),
    pytest.param(answer(json_body=[]), "decision_malformed", id="body-not-object"),
    pytest.param(answer(json_body={"result": "allow"}), "decision_malformed", id="result-not-object"),
    pytest.param(answer(json_body={"result": None}), "decision_malformed", id="result-null"),
    pytest.param(answer(json_body={"result": {}}), "decision_malformed", id="outcome-missing"),
    pytest.param(decision(outcome="permit"), "decision_malformed", id="outcome-not-allowed-value"),
    pytest.param(decision(outcome="ALLOW"), "decision_malformed", id="outcome-wrong-case"),
    pytest.param(decision(outcome=True), "decision_malformed", id="outcome-boolean"),
    pytest.param(decision(reasons="nope"), "decision_malformed", id="reasons-string"),
    pytest.param(decision(reasons={"code": "x", "message": "y"}), "decision_malformed", id="reasons-object"),
    pytest.param(decision(reasons=[{"code": "x"}]), "decision_malformed", id="reason-without-message"),
    pytest.param(decision(reasons=[{"code": 1, "message": "y"}]), "decision_malformed", id="reason-code-not-string"),
    pytest.param(decision(reasons=["x"]), "decision_malformed", id="reason-not-object"),
    pytest.param(decision(obligations=[]), "decision_malformed", id="obligations-list"),
    pytest.param(decision(obligations="tight"), "decision_malformed", id="obligations-string"),
    pytest.param(hang_up(), "opa_unreachable", id="connection-dropped"),
    pytest.param(stall(), "opa_timeout", id="no-answer-in-time"),
]  # fmt: skip


@pytest.mark.parametrize(("action", "cause"), UNAVAILABLE)
def test_unusable_answer_is_policy_unavailable(
    peer: ScriptedPeer, action: Action, cause: str
) -> None:
    peer.on("POST", DECISION_PATH, action)
    with pytest.raises(PolicyUnavailable) as caught:
        decide(peer)
    assert peer.count("POST", DECISION_PATH) == 1
    assert caught.value.status == 503
    assert caught.value.code == "policy_unavailable"
    assert caught.value.details == {"cause": cause}
    assert "could not decide" in caught.value.message


def test_refused_connection_is_unreachable() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(PolicyUnavailable) as caught:
        with_policy(port, lambda policy: policy.decide(POLICY_INPUT))
    assert caught.value.details == {"cause": "opa_unreachable"}


def test_unavailable_message_says_nothing_internal(peer: ScriptedPeer) -> None:
    peer.on("POST", DECISION_PATH, answer(500, body=b"rego_type_error: policies/authz.rego:12"))
    with pytest.raises(PolicyUnavailable) as caught:
        decide(peer)
    assert "rego" not in caught.value.message
    assert "500" not in caught.value.message


def test_request_shape(peer: ScriptedPeer) -> None:
    peer.on("POST", DECISION_PATH, decision())
    decide(peer)

    [request] = peer.seen
    assert request.method == "POST"
    assert request.target == "/v1/data/regate/authz/decision?provenance=true"
    assert request.headers["content-type"] == "application/json"
    assert "accept-encoding" not in request.headers  # no compressed answers to unpack
    assert json.loads(request.body) == {"input": POLICY_INPUT}


def test_one_connection_serves_decision_after_decision(peer: ScriptedPeer) -> None:
    peer.on("POST", DECISION_PATH, decision(outcome="deny"))

    async def three(policy: PolicyClient) -> list[str]:
        return [(await policy.decide({"n": n})).outcome for n in range(3)]

    assert with_policy(peer.port, three) == ["deny"] * 3
    assert [json.loads(s.body) for s in peer.seen] == [{"input": {"n": n}} for n in range(3)]


def test_good_decision(peer: ScriptedPeer) -> None:
    peer.on(
        "POST",
        DECISION_PATH,
        answer(
            json_body={
                "decision_id": "d-1",
                "result": {
                    "outcome": "deny",
                    "reasons": [{"code": "tool_not_granted", "message": "alice may not call add"}],
                    "obligations": {"limits": {"timeout_s": 1}},
                },
                "provenance": {
                    "version": "1.22.2",
                    "bundles": {"any-bundle-name": {"revision": "rev-42"}},
                },
            }
        ),
    )
    assert decide(peer) == Decision(
        outcome="deny",
        reasons=(Reason("tool_not_granted", "alice may not call add"),),
        obligations={"limits": {"timeout_s": 1}},
        policy_revision="rev-42",
    )


@pytest.mark.parametrize(
    ("provenance", "revision"),
    [
        pytest.param({"bundles": {"policies": {"revision": "abc"}}}, "abc", id="one-bundle"),
        pytest.param({"bundles": {"z": {"revision": "2"}, "a": {"revision": "1"}}}, "1,2", id="several-bundles-sorted"),
        pytest.param({"bundles": {"x": {"revision": ""}, "y": {"revision": "r"}}}, "r", id="empty-revision-skipped"),
        pytest.param(None, "unversioned", id="no-provenance"),
        pytest.param({"version": "1.22.2"}, "unversioned", id="no-bundles"),
        pytest.param({"bundles": {}}, "unversioned", id="empty-bundles"),
        pytest.param({"bundles": {"policies": {}}}, "unversioned", id="bundle-without-revision"),
        pytest.param({"bundles": {"policies": "rev"}}, "unversioned", id="bundle-not-object"),
    ],
)  # fmt: skip
def test_policy_revision(provenance: dict[str, Any] | None, revision: str) -> None:
    body: dict[str, Any] = {"result": {"outcome": "allow"}}
    if provenance is not None:
        body["provenance"] = provenance
    decision = parse_decision(body)
    assert decision.policy_revision == revision
    assert (decision.outcome, decision.reasons, decision.obligations) == ("allow", (), {})


def test_as_record() -> None:
    decision = parse_decision(
        {
            "result": {
                "outcome": "require_approval",
                "reasons": [{"code": "c", "message": "m"}],
                "obligations": {"k": 1},
            }
        }
    )
    assert decision.as_record() == {
        "outcome": "require_approval",
        "reasons": [{"code": "c", "message": "m"}],
        "obligations": {"k": 1},
        "policy_revision": "unversioned",
    }


@pytest.mark.parametrize(
    ("action", "expected", "asked"),
    [
        pytest.param(answer(json_body={}), True, 1, id="200"),
        pytest.param(answer(500), False, 1, id="500"),
        # aiohttp retries an idempotent GET once on a dropped connection.
        pytest.param(hang_up(), False, 2, id="hung-up"),
        pytest.param(stall(), False, 1, id="timeout"),
    ],
)
def test_healthy(peer: ScriptedPeer, action: Action, expected: bool, asked: int) -> None:
    peer.on("GET", "/health", action)
    assert with_policy(peer.port, lambda policy: policy.healthy()) is expected
    assert peer.count("GET", "/health") == asked


def test_status_of_a_serving_opa(peer: ScriptedPeer) -> None:
    peer.on("GET", "/health", answer(json_body={}))
    peer.on(
        "GET",
        DECISION_PATH,
        answer(
            json_body={
                "result": {"outcome": "deny"},
                "provenance": {"version": "1.22.2", "bundles": {"p": {"revision": "r-7"}}},
            }
        ),
    )
    status = with_policy(peer.port, lambda policy: policy.status())
    assert status.as_json() == {
        "reachable": True,
        "bundle_active": True,
        "revision": "r-7",
        "decision_defined": True,
        "decision_path": DECISION_PATH,
        "opa_version": "1.22.2",
    }
    assert [s.target for s in peer.seen] == [
        "/health?bundles=true",
        DECISION_PATH + "?provenance=true",
    ]


# --- the circuit breaker in front of OPA -------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("opa", failure_threshold=3, cooldown_s=5.0, clock=clock)


async def outcomes(policy: PolicyClient, n: int) -> list[str]:
    """The cause of each of n decisions, or "allow"."""
    causes = []
    for _ in range(n):
        try:
            causes.append((await policy.decide(POLICY_INPUT)).outcome)
        except PolicyUnavailable as exc:
            causes.append(exc.details["cause"])
    return causes


def test_dead_opa_opens_the_breaker_and_later_calls_never_reach_it(peer: ScriptedPeer) -> None:
    peer.on("POST", DECISION_PATH, hang_up())
    clock = Clock()

    async def run(policy: PolicyClient) -> PolicyUnavailable:
        assert await outcomes(policy, 5) == ["opa_unreachable"] * 3 + ["breaker_open"] * 2
        clock.now += 2
        with pytest.raises(PolicyUnavailable) as caught:
            await policy.decide(POLICY_INPUT)
        return caught.value

    refused = with_policy(peer.port, run, breaker=breaker(clock))
    assert peer.count("POST", DECISION_PATH) == 3  # the breaker held back everything after
    assert (refused.status, refused.code) == (503, "policy_unavailable")
    assert refused.details == {"cause": "breaker_open", "retry_after_s": 3}
    assert refused.headers == {"Retry-After": "3"}
    assert "failed 3 times in a row" in refused.message
    assert "try it again in 3 s" in refused.message


def test_probe_after_the_cooldown_closes_the_breaker_when_opa_is_back(peer: ScriptedPeer) -> None:
    peer.on("POST", DECISION_PATH, hang_up())
    clock = Clock()

    async def run(policy: PolicyClient) -> list[str]:
        assert await outcomes(policy, 4) == ["opa_unreachable"] * 3 + ["breaker_open"]
        peer.on("POST", DECISION_PATH, decision())
        assert await outcomes(policy, 1) == ["breaker_open"]  # OPA is back, cool-down not over
        clock.now += 5
        return await outcomes(policy, 3)

    assert with_policy(peer.port, run, breaker=breaker(clock)) == ["allow"] * 3
    assert peer.count("POST", DECISION_PATH) == 3 + 3


def test_failed_probe_keeps_the_breaker_open(peer: ScriptedPeer) -> None:
    peer.on("POST", DECISION_PATH, stall())
    clock = Clock()

    async def run(policy: PolicyClient) -> list[str]:
        await outcomes(policy, 3)
        clock.now += 5
        return await outcomes(policy, 3)

    causes = with_policy(peer.port, run, breaker=breaker(clock), timeout_s=0.1)
    assert causes == ["opa_timeout", "breaker_open", "breaker_open"]
    assert peer.count("POST", DECISION_PATH) == 4


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(answer(500, json_body={"code": "internal_error"}), id="http-500"),
        pytest.param(answer(json_body={}), id="undefined"),
        pytest.param(decision(outcome="permit"), id="malformed"),
    ],
)
def test_answers_from_opa_do_not_open_the_breaker(peer: ScriptedPeer, action: Action) -> None:
    """OPA answered, so it is alive: one caller's input that breaks the policy must
    not shut the gateway for everyone."""
    peer.on("POST", DECISION_PATH, action)
    causes = with_policy(peer.port, lambda policy: outcomes(policy, 6), breaker=breaker(Clock()))
    assert "breaker_open" not in causes
    assert peer.count("POST", DECISION_PATH) == 6


def test_one_deadline_bounds_the_whole_exchange(peer: ScriptedPeer) -> None:
    peer.on("POST", DECISION_PATH, stall(decision()))
    causes = with_policy(peer.port, lambda policy: outcomes(policy, 1), timeout_s=0.05)
    assert causes == ["opa_timeout"]


def test_health_check_is_false_while_open_and_is_the_probe_after_the_cooldown(
    peer: ScriptedPeer,
) -> None:
    peer.on("POST", DECISION_PATH, hang_up())
    peer.on("GET", "/health", answer(json_body={}))
    clock = Clock()

    async def run(policy: PolicyClient) -> tuple[bool, bool, str]:
        await outcomes(policy, 3)
        while_open = await policy.healthy()
        clock.now += 5
        after_cooldown = await policy.healthy()
        return while_open, after_cooldown, policy.breaker.state

    assert with_policy(peer.port, run, breaker=breaker(clock)) == (False, True, "closed")
    assert peer.count("GET", "/health") == 1  # not asked while the breaker was open


def test_cancelled_probe_frees_the_slot(peer: ScriptedPeer) -> None:
    peer.on("POST", DECISION_PATH, hang_up())
    peer.on("GET", "/health", stall())
    clock = Clock()

    async def run(policy: PolicyClient) -> str:
        await outcomes(policy, 3)
        clock.now += 5
        peer.arrived.clear()
        probe = asyncio.create_task(policy.healthy())
        assert await asyncio.to_thread(peer.arrived.wait, 10)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        peer.on("GET", "/health", answer(json_body={}))
        assert await policy.healthy() is True  # a new probe was let through
        return policy.breaker.state

    assert with_policy(peer.port, run, breaker=breaker(clock), timeout_s=5) == "closed"
