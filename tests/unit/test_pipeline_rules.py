"""The plain rules on the request path: obligations, enforcement, arguments and usage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from gateway.arguments import extract_arguments, validate_arguments
from gateway.errors import InvalidArguments, PolicyDenied
from gateway.pipeline import MAX_RATE_COST, enforce, rate_cost, tightened
from gateway.policy import Decision, Outcome, Reason
from gateway.usage import SWEEP_EVERY, WINDOW_S, Usage, UsageCounter
from regate.errors import BadRequest

# --- tightened: obligations may only lower limits ----------------------------

LIMITS: Mapping[str, int | float] = {"timeout_s": 10, "memory_mb": 256, "output_kb": 64, "pids": 8}


@pytest.mark.parametrize(
    ("obligations", "expected"),
    [
        pytest.param({}, LIMITS, id="no-obligations"),
        pytest.param({"limits": {"timeout_s": 2}}, {**LIMITS, "timeout_s": 2}, id="lower-one"),
        pytest.param({"limits": {"timeout_s": 0.5, "pids": 1}}, {**LIMITS, "timeout_s": 0.5, "pids": 1}, id="lower-two-float"),
        pytest.param({"limits": {"memory_mb": 4096}}, LIMITS, id="cannot-raise"),
        pytest.param({"limits": {"timeout_s": 10}}, LIMITS, id="equal-is-unchanged"),
        pytest.param({"limits": {"timeout_s": 1, "memory_mb": 9999}}, {**LIMITS, "timeout_s": 1}, id="lower-one-raise-other"),
        pytest.param({"limits": {"pids": True}}, LIMITS, id="boolean-ignored"),
        pytest.param({"limits": {"pids": False}}, LIMITS, id="false-ignored-not-zero"),
        pytest.param({"limits": {"timeout_s": "1"}}, LIMITS, id="string-ignored"),
        pytest.param({"limits": {"timeout_s": None}}, LIMITS, id="null-ignored"),
        pytest.param({"limits": {"network": 0, "cpu_s": 1}}, LIMITS, id="unknown-names-ignored"),
        pytest.param({"limits": [["timeout_s", 1]]}, LIMITS, id="limits-not-object"),
        pytest.param({"limits": 1}, LIMITS, id="limits-number"),
        pytest.param({"timeout_s": 1}, LIMITS, id="limit-outside-limits-key"),
    ],
)  # fmt: skip
def test_tightened(obligations: Mapping[str, Any], expected: Mapping[str, int | float]) -> None:
    assert tightened(LIMITS, obligations) == expected


def test_tightened_does_not_change_its_input() -> None:
    limits = dict(LIMITS)
    tightened(limits, {"limits": {"timeout_s": 1}})
    assert limits == LIMITS


# --- enforce -------------------------------------------------------------------


def decision(outcome: Outcome, *reasons: tuple[str, str]) -> Decision:
    return Decision(outcome=outcome, reasons=tuple(Reason(c, m) for c, m in reasons))


def test_allow_passes() -> None:
    enforce(decision("allow", ("granted", "alice may call add")), "d-1")


def test_deny_raises_with_reasons() -> None:
    denied = decision("deny", ("tool_not_granted", "alice may not call rm"), ("rate", "slow down"))
    with pytest.raises(PolicyDenied) as caught:
        enforce(denied, "d-1")
    assert caught.value.status == 403
    assert caught.value.message == "denied by policy: alice may not call rm"
    assert caught.value.details == {
        "reasons": [
            {"code": "tool_not_granted", "message": "alice may not call rm"},
            {"code": "rate", "message": "slow down"},
        ]
    }


def test_deny_without_reasons() -> None:
    with pytest.raises(PolicyDenied, match="no reason given") as caught:
        enforce(decision("deny"), "d-1")
    assert caught.value.details == {"reasons": []}


def test_allow_and_require_approval_go_on() -> None:
    # require_approval goes on to the approval step (Pipeline.park_or_redeem), which
    # parks the call or spends its approval: tests/integration/test_call_approvals.py.
    assert enforce(decision("allow", ("granted", "ok")), "d-1") is None
    assert enforce(decision("require_approval", ("sensitive", "writes files")), "d-1") is None


# --- arguments -------------------------------------------------------------------

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["a"],
    "additionalProperties": False,
    "properties": {
        "a": {"type": "string", "maxLength": 8},
        "token": {"type": "string", "pattern": "^tok_[a-z]+$"},
        "mode": {"enum": ["read", "write"]},
        "values": {"type": "array", "items": {"type": "number"}},
        "nested": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}},
    },
}
SECRET = "sk-live-9f8e7d6c5b4a"


@pytest.mark.parametrize(
    ("arguments", "path", "rule"),
    [
        pytest.param({"a": SECRET}, "/a", "maxLength", id="too-long"),
        pytest.param({"a": "x", "token": SECRET}, "/token", "pattern", id="pattern"),
        pytest.param({"a": "x", "mode": SECRET}, "/mode", "enum", id="enum"),
        pytest.param({"a": "x", "values": [1, 2, SECRET]}, "/values/2", "type", id="array-item"),
        pytest.param({"a": "x", "nested": {"n": 4}}, "/nested/n", "maximum", id="nested"),
        pytest.param({"a": 12345}, "/a", "type", id="wrong-type"),
        pytest.param({}, "/", "required", id="missing-required"),
    ],
)
def test_validate_arguments_names_the_path_not_the_value(
    arguments: Mapping[str, Any], path: str, rule: str
) -> None:
    with pytest.raises(InvalidArguments) as caught:
        validate_arguments(SCHEMA, arguments)
    assert caught.value.status == 422
    assert caught.value.details == {"path": path, "schema_rule": rule}
    assert caught.value.message.startswith(f"argument {path} is invalid: ")
    assert SECRET not in caught.value.message
    assert SECRET not in str(caught.value.details)
    assert "12345" not in caught.value.message


def test_validate_arguments_passes_good_arguments() -> None:
    validate_arguments(SCHEMA, {"a": "x", "token": "tok_abc", "values": [1, 2.5]})


def test_validate_arguments_truncates_long_rules() -> None:
    schema = {"type": "object", "properties": {"k": {"enum": [f"choice-{i}" for i in range(50)]}}}
    with pytest.raises(InvalidArguments) as caught:
        validate_arguments(schema, {"k": "nope"})
    assert caught.value.message.endswith("...")
    assert len(caught.value.message) < 140


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"arguments": {"a": 1}}, {"a": 1}, id="arguments"),
        pytest.param({}, {}, id="no-arguments-means-empty"),
    ],
)
def test_extract_arguments(body: Mapping[str, Any], expected: dict[str, Any]) -> None:
    assert extract_arguments(body) == expected


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param({"arguments": {}, "tool": "rm"}, "unknown fields ['tool']", id="unknown-field"),
        pytest.param({"args": {}}, "unknown fields ['args']", id="misspelled"),
        pytest.param({"arguments": [1, 2]}, "'arguments' must be a JSON object", id="list"),
        pytest.param({"arguments": "a=1"}, "'arguments' must be a JSON object", id="string"),
        pytest.param({"arguments": None}, "'arguments' must be a JSON object", id="null"),
    ],
)  # fmt: skip
def test_extract_arguments_refuses(body: Mapping[str, Any], fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        extract_arguments(body)
    assert fragment in caught.value.message


# --- usage ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_usage_counts_calls_before_this_one() -> None:
    clock = FakeClock()
    usage = UsageCounter(clock=clock)
    assert [usage.record("alice", "calc", "add").calls_last_minute for _ in range(3)] == [0, 1, 2]
    assert usage.record("bob", "calc", "add") == Usage(0, 0)


def test_usage_counts_each_tool_of_a_caller_apart() -> None:
    usage = UsageCounter(clock=FakeClock())
    usage.record("alice", "calc", "add")
    usage.record("alice", "calc", "add")
    # The same tool name on another agent is another tool.
    assert usage.record("alice", "other", "add") == Usage(2, 0)
    assert usage.record("alice", "calc", "stats") == Usage(3, 0)
    assert usage.record("alice", "calc", "add") == Usage(4, 2)
    assert usage.record("bob", "calc", "add") == Usage(0, 0)


def test_usage_forgets_quiet_callers() -> None:
    clock = FakeClock()
    usage = UsageCounter(clock=clock)
    usage.record("alice", "calc", "add")
    clock.now += WINDOW_S + 1
    for _ in range(SWEEP_EVERY):
        usage.record("bob", "calc", "add")
    assert "alice" not in usage._calls
    assert ("alice", "calc", "add") not in usage._tool_calls
    assert usage.record("bob", "calc", "add").calls_last_minute == SWEEP_EVERY


def test_usage_window_slides() -> None:
    clock = FakeClock()
    start = clock.now
    usage = UsageCounter(clock=clock)

    def at(offset: float) -> int:
        clock.now = start + offset
        return usage.record("alice", "calc", "add").tool_calls_last_minute

    assert at(0) == 0
    assert at(30) == 1
    assert at(WINDOW_S - 0.5) == 2  # both earlier calls still inside
    assert at(WINDOW_S) == 2  # the call at 0 is exactly a window old: out
    assert at(WINDOW_S + 30) == 2  # the call at 30 is out; 59.5 and 60 are in
    assert at(3 * WINDOW_S) == 0  # all fell out


def test_a_charge_adds_units_to_both_counts() -> None:
    usage = UsageCounter(clock=FakeClock())
    usage.record("alice", "calc", "add")
    usage.charge("alice", "calc", "add", 3)  # a call costing 4
    usage.charge("alice", "calc", "add", 0)  # costing 1: nothing more
    assert usage.record("alice", "calc", "add") == Usage(4, 4)
    assert usage.record("alice", "calc", "stats") == Usage(5, 0)


def test_charged_units_leave_the_window_with_their_call() -> None:
    clock = FakeClock()
    usage = UsageCounter(clock=clock)
    usage.record("alice", "calc", "add")
    usage.charge("alice", "calc", "add", 9)
    clock.now += WINDOW_S
    assert usage.record("alice", "calc", "add") == Usage(0, 0)


@pytest.mark.parametrize(
    ("obligations", "cost"),
    [
        pytest.param({}, 1, id="none"),
        pytest.param({"rate_cost": 4}, 4, id="four"),
        pytest.param({"rate_cost": MAX_RATE_COST}, MAX_RATE_COST, id="the-most"),
        pytest.param({"rate_cost": MAX_RATE_COST + 1}, 1, id="too-many-ignored"),
        pytest.param({"rate_cost": 0}, 1, id="zero-ignored"),
        pytest.param({"rate_cost": -3}, 1, id="negative-ignored"),
        pytest.param({"rate_cost": 2.5}, 1, id="fraction-ignored"),
        pytest.param({"rate_cost": "4"}, 1, id="string-ignored"),
        pytest.param({"rate_cost": True}, 1, id="boolean-ignored"),
    ],
)
def test_rate_cost_from_obligations(obligations: dict[str, Any], cost: int) -> None:
    assert rate_cost(obligations) == cost
