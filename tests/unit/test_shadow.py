"""The shadow policy's contract (gateway/shadow.py): it never changes the outcome,
never holds a call more than `max_wait_s` past the enforced answer, and every
failure of its own is recorded, not enforced.

OPA's shadow endpoint is played by an httpx.MockTransport here because the cases are
ones a real OPA does not produce on demand (a slow shadow beside a fast enforced
answer, 500s, bodies without `result`); agreement and disagreement against the real
OPA are in tests/integration/test_policy_change.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from gateway.audit import AuditRecord
from gateway.errors import PolicyUnavailable
from gateway.policy import Decision, Reason
from gateway.shadow import SHADOW_PATH, ShadowPolicy
from regate.audit_query import shadow_verdict

INPUT = {"caller": {"sub": "alice"}, "target": {"agent_id": "calc"}, "tool": {"name": "add"}}
ALLOW = Decision("allow", (Reason("granted", "ok"),), {}, "rev-1")


def opa_answer(result: Any, revision: str = "rev-2") -> dict[str, Any]:
    return {"result": result, "provenance": {"bundles": {"b": {"revision": revision}}}}


def shadow_of(
    handler: Callable[[httpx.Request], Any], *, sample_rate: float = 1.0, max_wait_s: float = 1.0
) -> tuple[ShadowPolicy, httpx.AsyncClient]:
    client = httpx.AsyncClient(base_url="http://opa", transport=httpx.MockTransport(handler))
    return ShadowPolicy(
        client, sample_rate=sample_rate, max_wait_s=max_wait_s, timeout_s=5.0
    ), client


async def enforced_allow(policy_input: Mapping[str, Any]) -> Decision:
    return ALLOW


def run(
    handler: Callable[[httpx.Request], Any], **kwargs: Any
) -> tuple[Decision, dict[str, Any] | None, ShadowPolicy]:
    async def go() -> tuple[Decision, dict[str, Any] | None, ShadowPolicy]:
        shadow, client = shadow_of(handler, **kwargs)
        async with client:
            decision, record = await shadow.decide_beside(enforced_allow, INPUT, "d-1")
        return decision, record, shadow

    return asyncio.run(go())


def test_a_disagreement_is_recorded_and_counted_but_not_obeyed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == SHADOW_PATH
        deny = {"outcome": "deny", "reasons": [{"code": "no_grant", "message": "m"}]}
        return httpx.Response(200, json=opa_answer(deny))

    decision, record, shadow = run(handler)

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


def test_an_agreement_is_counted() -> None:
    allow = {"outcome": "allow", "reasons": [{"code": "granted", "message": "m"}]}
    _, record, shadow = run(lambda request: httpx.Response(200, json=opa_answer(allow)))
    assert record is not None
    assert record["agrees"] is True
    assert (shadow.counts.agreed, shadow.counts.disagreed) == (1, 0)


@pytest.mark.parametrize(
    ("response", "error"),
    [
        pytest.param(httpx.Response(200, json={}), "undefined", id="no-shadow-package"),
        pytest.param(httpx.Response(500, text="boom"), "opa_error", id="opa-500"),
        pytest.param(httpx.Response(200, text="not json"), "opa_bad_json", id="not-json"),
        pytest.param(
            httpx.Response(200, json=opa_answer({"outcome": "maybe"})),
            "decision_malformed",
            id="bad-outcome",
        ),
    ],
)
def test_a_failing_shadow_is_recorded_never_enforced(response: httpx.Response, error: str) -> None:
    decision, record, shadow = run(lambda request: response)

    assert decision is ALLOW
    assert record == {"error": error, "agrees": None}
    assert (shadow.counts.sampled, shadow.counts.failed) == (1, 1)


def test_an_unreachable_shadow_is_recorded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    decision, record, _ = run(handler)
    assert decision is ALLOW
    assert record == {"error": "opa_unreachable", "agrees": None}


def test_a_late_shadow_is_abandoned_after_max_wait() -> None:
    released = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await released.wait()  # never set: the shadow would hang forever
        return httpx.Response(200, json=opa_answer({"outcome": "allow"}))

    async def go() -> tuple[Decision, dict[str, Any] | None, ShadowPolicy]:
        shadow, client = shadow_of(handler, max_wait_s=0.05)
        async with client:
            decision, record = await asyncio.wait_for(
                shadow.decide_beside(enforced_allow, INPUT, "d-1"), timeout=10
            )
        return decision, record, shadow

    decision, record, shadow = asyncio.run(go())
    assert decision is ALLOW
    assert record == {"error": "late", "agrees": None}
    assert shadow.counts.failed == 1


def test_the_enforced_failure_is_raised_unchanged_and_the_shadow_dropped() -> None:
    asked: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        await asyncio.sleep(10)
        return httpx.Response(200, json=opa_answer({"outcome": "allow"}))

    async def enforced_down(policy_input: Mapping[str, Any]) -> Decision:
        await asyncio.sleep(0.01)  # the shadow request is in flight by now
        raise PolicyUnavailable("down", cause="opa_unreachable")

    async def go() -> ShadowPolicy:
        shadow, client = shadow_of(handler)
        async with client:
            with pytest.raises(PolicyUnavailable, match="down"):
                await shadow.decide_beside(enforced_down, INPUT, "d-1")
        return shadow

    shadow = asyncio.run(asyncio.wait_for(go(), timeout=10))
    assert asked == [SHADOW_PATH]
    assert shadow.counts.sampled == 0  # nothing to compare with


@pytest.mark.parametrize(("rate", "draw", "asked"), [(0.25, 0.2, True), (0.25, 0.3, False)])
def test_only_the_sample_asks_the_shadow(rate: float, draw: float, asked: bool) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=opa_answer({"outcome": "allow"}))

    async def go() -> dict[str, Any] | None:
        client = httpx.AsyncClient(base_url="http://opa", transport=httpx.MockTransport(handler))
        shadow = ShadowPolicy(
            client, sample_rate=rate, max_wait_s=1.0, timeout_s=5.0, sample=lambda: draw
        )
        async with client:
            _, record = await shadow.decide_beside(enforced_allow, INPUT, "d-1")
        return record

    record = asyncio.run(go())
    assert (record is not None) is asked
    assert bool(seen) is asked


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
