"""The OPA client (`gateway.policy`): every answer that is not a well-formed decision is a 503.

respx stands in for OPA to produce what a real OPA will not on demand: 500s, broken
bodies, timeouts and dropped connections. No sockets are opened.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import httpx
import pytest
import respx

from gateway.breaker import CircuitBreaker
from gateway.errors import PolicyUnavailable
from gateway.policy import DECISION_PATH, Decision, PolicyClient, Reason, parse_decision

BASE_URL = "http://opa.test"
POLICY_INPUT: dict[str, Any] = {
    "input_version": 1,
    "caller": {"sub": "alice"},
    "tool": {"name": "add"},
    "arguments": {"a": 1, "b": 2},
}


@pytest.fixture
def router() -> respx.MockRouter:
    return respx.MockRouter(base_url=BASE_URL, assert_all_called=False)


def decide(router: respx.MockRouter, policy_input: dict[str, Any] = POLICY_INPUT) -> Decision:
    async def run() -> Decision:
        transport = httpx.MockTransport(router.async_handler)
        async with httpx.AsyncClient(base_url=BASE_URL, transport=transport) as client:
            return await PolicyClient(client, timeout_s=0.5).decide(policy_input)

    return asyncio.run(run())


def healthy(router: respx.MockRouter) -> bool:
    async def run() -> bool:
        transport = httpx.MockTransport(router.async_handler)
        async with httpx.AsyncClient(base_url=BASE_URL, transport=transport) as client:
            return await PolicyClient(client, timeout_s=0.5).healthy()

    return asyncio.run(run())


def respond(**kwargs: Any) -> dict[str, Any]:
    return {"return_value": httpx.Response(**kwargs)}


def fail(exc: type[Exception]) -> dict[str, Any]:
    return {"side_effect": exc}


def ok_json(body: Any) -> dict[str, Any]:
    return respond(status_code=200, json=body)


def result(**fields: Any) -> dict[str, Any]:
    return ok_json({"result": {"outcome": "allow", **fields}})


UNAVAILABLE: list[Any] = [
    pytest.param(ok_json({}), "decision_undefined", id="200-without-result-undefined"),
    pytest.param(ok_json({"decision_id": "x", "provenance": {}}), "decision_undefined", id="200-provenance-only"),
    pytest.param(respond(status_code=500, json={"code": "internal_error"}), "opa_error", id="http-500"),
    pytest.param(respond(status_code=400, json={"code": "invalid_parameter"}), "opa_error", id="http-400"),
    pytest.param(respond(status_code=204), "opa_error", id="http-204"),
    pytest.param(respond(status_code=200, text="<html>proxy</html>"), "opa_bad_json", id="non-json-body"),
    pytest.param(respond(status_code=200, content=b""), "opa_bad_json", id="empty-body"),
    pytest.param(ok_json([]), "decision_malformed", id="body-not-object"),
    pytest.param(ok_json({"result": "allow"}), "decision_malformed", id="result-not-object"),
    pytest.param(ok_json({"result": None}), "decision_malformed", id="result-null"),
    pytest.param(ok_json({"result": {}}), "decision_malformed", id="outcome-missing"),
    pytest.param(result(outcome="permit"), "decision_malformed", id="outcome-not-allowed-value"),
    pytest.param(result(outcome="ALLOW"), "decision_malformed", id="outcome-wrong-case"),
    pytest.param(result(outcome=True), "decision_malformed", id="outcome-boolean"),
    pytest.param(result(reasons="nope"), "decision_malformed", id="reasons-string"),
    pytest.param(result(reasons={"code": "x", "message": "y"}), "decision_malformed", id="reasons-object"),
    pytest.param(result(reasons=[{"code": "x"}]), "decision_malformed", id="reason-without-message"),
    pytest.param(result(reasons=[{"code": 1, "message": "y"}]), "decision_malformed", id="reason-code-not-string"),
    pytest.param(result(reasons=["x"]), "decision_malformed", id="reason-not-object"),
    pytest.param(result(obligations=[]), "decision_malformed", id="obligations-list"),
    pytest.param(result(obligations="tight"), "decision_malformed", id="obligations-string"),
    pytest.param(fail(httpx.ConnectError), "opa_unreachable", id="connect-error"),
    pytest.param(fail(httpx.RemoteProtocolError), "opa_unreachable", id="connection-dropped"),
    pytest.param(fail(httpx.ReadTimeout), "opa_timeout", id="read-timeout"),
    pytest.param(fail(httpx.ConnectTimeout), "opa_timeout", id="connect-timeout"),
    pytest.param(fail(httpx.PoolTimeout), "opa_timeout", id="pool-timeout"),
]  # fmt: skip


@pytest.mark.parametrize(("mock", "cause"), UNAVAILABLE)
def test_unusable_answer_is_policy_unavailable(
    router: respx.MockRouter, mock: dict[str, Any], cause: str
) -> None:
    route = router.post(DECISION_PATH).mock(**mock)
    with pytest.raises(PolicyUnavailable) as caught:
        decide(router)
    assert route.call_count == 1
    assert caught.value.status == 503
    assert caught.value.code == "policy_unavailable"
    assert caught.value.details == {"cause": cause}
    assert "could not decide" in caught.value.message


def test_unavailable_message_says_nothing_internal(router: respx.MockRouter) -> None:
    router.post(DECISION_PATH).respond(500, text="rego_type_error: policies/authz.rego:12")
    with pytest.raises(PolicyUnavailable) as caught:
        decide(router)
    assert "rego" not in caught.value.message
    assert "500" not in caught.value.message


def test_request_shape(router: respx.MockRouter) -> None:
    route = router.post(DECISION_PATH).respond(200, json={"result": {"outcome": "allow"}})
    decide(router)

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.path == "/v1/data/regate/authz/decision"
    assert dict(request.url.params) == {"provenance": "true"}
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"input": POLICY_INPUT}


def test_good_decision(router: respx.MockRouter) -> None:
    router.post(DECISION_PATH).respond(
        200,
        json={
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
        },
    )
    assert decide(router) == Decision(
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
    ("mock", "expected"),
    [
        pytest.param(respond(status_code=200, json={}), True, id="200"),
        pytest.param(respond(status_code=500), False, id="500"),
        pytest.param(fail(httpx.ConnectError), False, id="connect-error"),
        pytest.param(fail(httpx.ReadTimeout), False, id="timeout"),
    ],
)
def test_healthy(router: respx.MockRouter, mock: dict[str, Any], expected: bool) -> None:
    route = router.get("/health").mock(**mock)
    assert healthy(router) is expected
    assert route.call_count == 1


# --- the circuit breaker in front of OPA -------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker_client(
    router: respx.MockRouter, clock: Clock, *, timeout_s: float = 0.5
) -> tuple[httpx.AsyncClient, PolicyClient]:
    transport = httpx.MockTransport(router.async_handler)
    client = httpx.AsyncClient(base_url=BASE_URL, transport=transport)
    breaker = CircuitBreaker("opa", failure_threshold=3, cooldown_s=5.0, clock=clock)
    return client, PolicyClient(client, timeout_s=timeout_s, breaker=breaker)


async def outcomes(policy: PolicyClient, n: int) -> list[str]:
    """The cause of each of n decisions, or "allow"."""
    causes = []
    for _ in range(n):
        try:
            causes.append((await policy.decide(POLICY_INPUT)).outcome)
        except PolicyUnavailable as exc:
            causes.append(exc.details["cause"])
    return causes


def test_dead_opa_opens_the_breaker_and_later_calls_never_reach_it(
    router: respx.MockRouter,
) -> None:
    route = router.post(DECISION_PATH).mock(side_effect=httpx.ConnectError)
    clock = Clock()

    async def run() -> PolicyUnavailable:
        client, policy = breaker_client(router, clock)
        async with client:
            assert await outcomes(policy, 5) == ["opa_unreachable"] * 3 + ["breaker_open"] * 2
            clock.now += 2
            with pytest.raises(PolicyUnavailable) as caught:
                await policy.decide(POLICY_INPUT)
            return caught.value

    refused = asyncio.run(run())
    assert route.call_count == 3  # the breaker held back everything after the third
    assert (refused.status, refused.code) == (503, "policy_unavailable")
    assert refused.details == {"cause": "breaker_open", "retry_after_s": 3}
    assert refused.headers == {"Retry-After": "3"}
    assert "failed 3 times in a row" in refused.message
    assert "try it again in 3 s" in refused.message


def test_probe_after_the_cooldown_closes_the_breaker_when_opa_is_back(
    router: respx.MockRouter,
) -> None:
    route = router.post(DECISION_PATH)
    route.side_effect = httpx.ConnectError
    clock = Clock()

    async def run() -> list[str]:
        client, policy = breaker_client(router, clock)
        async with client:
            assert await outcomes(policy, 4) == ["opa_unreachable"] * 3 + ["breaker_open"]
            route.side_effect = None
            route.return_value = httpx.Response(200, json={"result": {"outcome": "allow"}})
            assert await outcomes(policy, 1) == ["breaker_open"]  # OPA is back, cool-down not over
            clock.now += 5
            return await outcomes(policy, 3)

    assert asyncio.run(run()) == ["allow"] * 3
    assert route.call_count == 3 + 3


def test_failed_probe_keeps_the_breaker_open(router: respx.MockRouter) -> None:
    route = router.post(DECISION_PATH).mock(side_effect=httpx.ReadTimeout)
    clock = Clock()

    async def run() -> list[str]:
        client, policy = breaker_client(router, clock)
        async with client:
            await outcomes(policy, 3)
            clock.now += 5
            return await outcomes(policy, 3)

    assert asyncio.run(run()) == ["opa_timeout", "breaker_open", "breaker_open"]
    assert route.call_count == 4


@pytest.mark.parametrize(
    "mock",
    [
        pytest.param(respond(status_code=500, json={"code": "internal_error"}), id="http-500"),
        pytest.param(ok_json({}), id="undefined"),
        pytest.param(result(outcome="permit"), id="malformed"),
    ],
)
def test_answers_from_opa_do_not_open_the_breaker(
    router: respx.MockRouter, mock: dict[str, Any]
) -> None:
    """OPA answered, so it is alive: one caller's input that breaks the policy must
    not shut the gateway for everyone."""
    route = router.post(DECISION_PATH).mock(**mock)

    async def run() -> list[str]:
        client, policy = breaker_client(router, Clock())
        async with client:
            return await outcomes(policy, 6)

    causes = asyncio.run(run())
    assert "breaker_open" not in causes
    assert route.call_count == 6


def test_one_deadline_bounds_the_whole_exchange(router: respx.MockRouter) -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json={"result": {"outcome": "allow"}})

    router.post(DECISION_PATH).mock(side_effect=stall)

    async def run() -> list[str]:
        client, policy = breaker_client(router, Clock(), timeout_s=0.05)
        async with client:
            return await outcomes(policy, 1)

    assert asyncio.run(run()) == ["opa_timeout"]


def test_health_check_is_false_while_open_and_is_the_probe_after_the_cooldown(
    router: respx.MockRouter,
) -> None:
    router.post(DECISION_PATH).mock(side_effect=httpx.ConnectError)
    health = router.get("/health").respond(200, json={})
    clock = Clock()

    async def run() -> tuple[bool, bool, str]:
        client, policy = breaker_client(router, clock)
        async with client:
            await outcomes(policy, 3)
            while_open = await policy.healthy()
            clock.now += 5
            after_cooldown = await policy.healthy()
            return while_open, after_cooldown, policy.breaker.state

    assert asyncio.run(run()) == (False, True, "closed")
    assert health.call_count == 1  # not asked while the breaker was open


def test_cancelled_probe_frees_the_slot(router: respx.MockRouter) -> None:
    started = asyncio.Event()

    async def stall(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(30)
        return httpx.Response(200, json={})

    router.post(DECISION_PATH).mock(side_effect=httpx.ConnectError)
    router.get("/health").mock(side_effect=stall)
    clock = Clock()

    async def run() -> str:
        client, policy = breaker_client(router, clock)
        async with client:
            await outcomes(policy, 3)
            clock.now += 5
            probe = asyncio.create_task(policy.healthy())
            await started.wait()
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe
            router.get("/health").respond(200, json={})
            assert await policy.healthy() is True  # a new probe was let through
            return policy.breaker.state

    assert asyncio.run(run()) == "closed"


@pytest.mark.parametrize(
    ("underneath", "cause"),
    [
        pytest.param(aiohttp.ClientOSError(111, "Connect call failed"), "opa_unreachable", id="refused"),
        pytest.param(aiohttp.ServerDisconnectedError(), "opa_unreachable", id="disconnected"),
        pytest.param(aiohttp.ServerTimeoutError("read timed out"), "opa_timeout", id="aiohttp-timeout"),
        pytest.param(None, "opa_timeout", id="plain-httpx-timeout"),
    ],
)  # fmt: skip
def test_aiohttp_errors_reported_as_timeouts_are_told_apart(
    underneath: Exception | None, cause: str
) -> None:
    """httpx_aiohttp reports a refused connection as ConnectTimeout; the log must not."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("mapped by the transport") from underneath

    async def run() -> PolicyUnavailable:
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(base_url=BASE_URL, transport=transport) as client:
            with pytest.raises(PolicyUnavailable) as caught:
                await PolicyClient(client, timeout_s=0.5).decide(POLICY_INPUT)
            return caught.value

    assert asyncio.run(run()).details == {"cause": cause}
