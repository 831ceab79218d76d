"""From what the runner saw to one result or error type (`sandbox_runner.outcome.classify`),
and the limits a call runs under (`sandbox_runner.limits.Limits`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox_runner.limits import DEFAULT_CEILING, TMPFS_MB, Limits
from sandbox_runner.outcome import Observed, RunOutcome, classify

LIMITS = Limits(timeout_s=2.0, memory_mb=128, output_kb=64, pids=8)  # cpu_s == 3


def seen(
    rc: int = 0,
    stdout: bytes = b"",
    stderr: bytes = b"",
    *,
    timed_out: bool = False,
    over_cap: bool = False,
    memory_hit: bool = False,
    pids_hit: bool = False,
    cpu_s: float | None = None,
) -> Observed:
    return Observed(
        returncode=rc,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        output_over_cap=over_cap,
        memory_hit=memory_hit,
        pids_hit=pids_hit,
        cpu_s=cpu_s,
    )


ERRORS: list[Any] = [
    pytest.param(seen(-9, timed_out=True), "timeout", "2 s timeout", id="timed-out"),
    pytest.param(seen(0, timed_out=True), "timeout", "2 s timeout", id="timed-out-rc-0"),
    pytest.param(seen(-9, over_cap=True), "output_limit", "64 KiB", id="output-over-cap"),
    pytest.param(seen(-9, timed_out=True, over_cap=True), "timeout", "timeout", id="timeout-before-output-cap"),
    pytest.param(seen(-24), "cpu_limit", "CPU time", id="sigxcpu-negative"),
    pytest.param(seen(152), "cpu_limit", "CPU time", id="sigxcpu-shell-152"),
    pytest.param(seen(-9, cpu_s=3.0), "cpu_limit", "CPU time", id="sigkill-cpu-at-limit"),
    pytest.param(seen(-9, cpu_s=7.5), "cpu_limit", "CPU time", id="sigkill-cpu-over-limit"),
    pytest.param(seen(137, cpu_s=3.0), "cpu_limit", "CPU time", id="sigkill-137-cpu-at-limit"),
    pytest.param(seen(-9, cpu_s=2.99), "crashed", "SIGKILL", id="sigkill-cpu-below-limit"),
    pytest.param(seen(-9, cpu_s=None), "crashed", "SIGKILL", id="sigkill-cpu-unknown"),
    pytest.param(seen(137), "crashed", "SIGKILL", id="sigkill-137-cpu-unknown"),
    pytest.param(seen(-9, memory_hit=True), "memory_limit", "128 MiB", id="memory-hit-killed"),
    pytest.param(seen(1, memory_hit=True), "memory_limit", "128 MiB", id="memory-hit-rc-1"),
    pytest.param(seen(0, memory_hit=True, timed_out=True), "memory_limit", "128 MiB", id="memory-hit-before-timeout"),
    pytest.param(seen(-9, memory_hit=True, over_cap=True), "memory_limit", "128 MiB", id="memory-hit-before-output-cap"),
    pytest.param(seen(-9, memory_hit=True, pids_hit=True), "memory_limit", "128 MiB", id="memory-hit-before-pids-hit"),
    pytest.param(seen(1, pids_hit=True), "pids_limit", "more than 8 processes", id="pids-hit-rc-1"),
    pytest.param(seen(0, pids_hit=True, timed_out=True), "pids_limit", "more than 8 processes", id="pids-hit-before-timeout"),
    pytest.param(seen(1, stderr=b"Traceback ...\nMemoryError\n"), "memory_limit", "128 MiB", id="stderr-memoryerror"),
    pytest.param(seen(1, stderr=b"fork: Cannot allocate memory"), "memory_limit", "128 MiB", id="stderr-enomem"),
    pytest.param(seen(1, stderr=b"OSError: [Errno 27] File too large"), "file_size_limit", "file larger", id="stderr-efbig"),
    pytest.param(seen(1, stderr=b"OSError: [Errno 28] No space left on device"), "disk_limit", "/tmp", id="stderr-enospc"),
    pytest.param(seen(1, stderr=b"OSError: [Errno 24] Too many open files"), "open_files_limit", "more files", id="stderr-emfile"),
    pytest.param(seen(-25), "file_size_limit", "file larger", id="sigxfsz-negative"),
    pytest.param(seen(153), "file_size_limit", "file larger", id="sigxfsz-shell-153"),
    pytest.param(seen(-11), "crashed", "SIGSEGV", id="sigsegv-negative"),
    pytest.param(seen(139), "crashed", "SIGSEGV", id="sigsegv-shell-139"),
    pytest.param(seen(-6), "crashed", "SIGABRT", id="sigabrt"),
    pytest.param(seen(200), "crashed", "signal 72", id="unknown-signal-number"),
    pytest.param(seen(3, stderr=b"usage: add.py A B\nerror: bad input\n"), "tool_error", "status 3: usage: add.py A B\nerror: bad input", id="exit-3-with-stderr"),
    pytest.param(seen(3), "tool_error", "status 3: no stderr", id="exit-3-without-stderr"),
    pytest.param(seen(1, b'{"ok": true}', b"warning\n"), "tool_error", "status 1: warning", id="exit-1-ignores-valid-stdout"),
    pytest.param(seen(2, stderr=b"bad \xff byte"), "tool_error", "bad \ufffd byte", id="exit-2-undecodable-stderr"),
    pytest.param(seen(0, b"not json"), "invalid_output", "not one JSON value", id="not-json"),
    pytest.param(seen(0, b""), "invalid_output", "not one JSON value", id="empty-stdout"),
    pytest.param(seen(0, b"\xff\xfe\x00\x81garbage\x00"), "invalid_output", "not one JSON value", id="binary"),
    pytest.param(seen(0, b'{"a": "\xff"}'), "invalid_output", "not one JSON value", id="invalid-utf8-in-string"),
    pytest.param(seen(0, b'{"a": 1}\n{"b": 2}'), "invalid_output", "not one JSON value", id="two-json-values"),
]  # fmt: skip


@pytest.mark.parametrize(("observed", "kind", "fragment"), ERRORS)
def test_error_type_and_message(observed: Observed, kind: str, fragment: str) -> None:
    metrics = {"wall_ms": 12.5}
    outcome = classify(LIMITS, observed, metrics)
    assert outcome.ok is False
    assert outcome.result is None
    assert outcome.error is not None
    assert set(outcome.error) == {"type", "message"}
    assert outcome.error["type"] == kind
    assert fragment in outcome.error["message"]
    assert outcome.metrics is metrics
    assert outcome.as_json() == {"ok": False, "error": outcome.error, "metrics": metrics}


@pytest.mark.parametrize(
    ("wall_ms", "kind"),
    [(2000.0, "timeout"), (4100.0, "timeout"), (1999.0, "crashed"), (12.5, "crashed")],
)
def test_sigkill_past_the_timeout_is_a_timeout(wall_ms: float, kind: str) -> None:
    """nsjail's wall-clock backstop kills with SIGKILL when a starved runner has not
    killed the tool at its own timeout yet; before the timeout, a SIGKILL is a crash."""
    outcome = classify(LIMITS, seen(-9, cpu_s=0.5), {"wall_ms": wall_ms})
    assert outcome.error is not None
    assert outcome.error["type"] == kind


@pytest.mark.parametrize(("observed", "kind", "fragment"), ERRORS)
def test_every_error_message_is_a_sentence(observed: Observed, kind: str, fragment: str) -> None:
    outcome = classify(LIMITS, observed, {})
    assert outcome.error is not None
    message = outcome.error["message"]
    assert isinstance(message, str)
    assert message == message.strip()
    assert message.startswith(("the tool ", "the tool's "))
    assert len(message.split()) >= 5


def test_tool_error_keeps_only_the_last_500_characters_of_stderr() -> None:
    stderr = ("A" * 600 + "B" * 500).encode()
    outcome = classify(LIMITS, seen(3, stderr=stderr), {})
    assert outcome.error == {"type": "tool_error", "message": f"the tool exited with status 3: {'B' * 500}"}  # fmt: skip


def test_limit_words_early_in_a_long_stderr_do_not_count() -> None:
    # Only the tail is looked at: a MemoryError long before the end is not the cause.
    stderr = b"MemoryError (recovered)\n" + b"x" * 600
    outcome = classify(LIMITS, seen(1, stderr=stderr), {})
    assert outcome.error is not None
    assert outcome.error["type"] == "tool_error"


@pytest.mark.parametrize(
    "observed",
    [
        pytest.param(seen(0, b'{"sum": 3}', memory_hit=True), id="memory-hit-but-exit-0"),
        pytest.param(seen(0, b'{"sum": 3}', pids_hit=True), id="pids-hit-but-exit-0"),
        pytest.param(
            seen(0, b'{"sum": 3}', b"MemoryError handled"), id="limit-words-in-stderr-exit-0"
        ),
        pytest.param(seen(0, b'{"sum": 3}', cpu_s=100.0), id="lots-of-cpu-exit-0"),
        pytest.param(seen(0, b'  {"sum": 3}\n'), id="surrounding-whitespace"),
    ],
)
def test_exit_0_with_json_is_ok_even_when_a_limit_was_brushed(observed: Observed) -> None:
    metrics = {"wall_ms": 3.0, "cpu_ms": 1.0}
    outcome = classify(LIMITS, observed, metrics)
    assert outcome == RunOutcome(ok=True, result={"sum": 3}, error=None, metrics=metrics)
    assert outcome.metrics is metrics
    assert outcome.as_json() == {"ok": True, "result": {"sum": 3}, "metrics": metrics}


@pytest.mark.parametrize(
    ("stdout", "result"),
    [
        pytest.param(b"null", None, id="null"),
        pytest.param(b"0", 0, id="zero"),
        pytest.param(b'"text"', "text", id="string"),
        pytest.param(b"[1, 2.5, false]", [1, 2.5, False], id="array"),
        pytest.param('{"name": "Zoë"}'.encode(), {"name": "Zoë"}, id="utf8-object"),
    ],
)
def test_any_json_value_is_a_result(stdout: bytes, result: Any) -> None:
    outcome = classify(LIMITS, seen(0, stdout), {})
    assert outcome.ok is True
    assert outcome.result == result
    assert outcome.error is None


def test_messages_name_the_limits_in_force() -> None:
    other = Limits(timeout_s=0.5, memory_mb=300, output_kb=10, pids=2)
    messages = {
        kind: classify(other, observed, {}).error
        for kind, observed in {
            "timeout": seen(-9, timed_out=True),
            "memory": seen(-9, memory_hit=True),
            "output": seen(-9, over_cap=True),
            "pids": seen(1, pids_hit=True),
        }.items()
    }
    assert messages == {
        "timeout": {"type": "timeout", "message": "the tool ran past its 0.5 s timeout and was killed with every process it started; make it faster or ask for a longer timeout_s"},
        "memory": {"type": "memory_limit", "message": "the tool ran out of its 300 MiB of memory; raise memory_mb in its manifest if it really needs more"},
        "output": {"type": "output_limit", "message": "the tool wrote more than 10 KiB to stdout and was stopped; return less, or raise output_kb in its manifest"},
        "pids": {"type": "pids_limit", "message": "the tool tried to run more than 2 processes at once and was stopped; raise pids in its manifest if it really needs more"},
    }  # fmt: skip


@pytest.mark.parametrize(
    "stdout",
    [
        pytest.param(b"NaN", id="nan"),
        pytest.param(b'{"a": Infinity}', id="infinity"),
        pytest.param(b'{"a": -Infinity}', id="minus-infinity"),
        pytest.param(b'"\\ud800"', id="lone-surrogate"),
    ],
)
def test_non_interoperable_json_is_invalid_output(stdout: bytes) -> None:
    outcome = classify(LIMITS, seen(0, stdout), {})
    assert outcome.error is not None
    assert outcome.error["type"] == "invalid_output"
    json.dumps(outcome.as_json(), allow_nan=False).encode()


# --- Limits -------------------------------------------------------------------

CEILING = Limits(timeout_s=30.0, memory_mb=512, output_kb=256, pids=16)


def test_default_ceiling_and_tmpfs() -> None:
    assert Limits(timeout_s=60.0, memory_mb=1024, output_kb=1024, pids=64) == DEFAULT_CEILING
    assert TMPFS_MB == 16


def test_grant_within_the_ceiling_is_kept() -> None:
    limits = Limits.from_grant(
        {"timeout_s": 5, "memory_mb": 128, "output_kb": 64, "pids": 4}, CEILING
    )
    assert limits == Limits(timeout_s=5.0, memory_mb=128, output_kb=64, pids=4)


def test_grant_above_the_ceiling_is_capped() -> None:
    limits = Limits.from_grant(
        {"timeout_s": 300, "memory_mb": 8192, "output_kb": 16384, "pids": 1024}, CEILING
    )
    assert limits == CEILING


def test_missing_values_come_from_the_ceiling() -> None:
    assert Limits.from_grant({}, CEILING) == CEILING
    assert Limits.from_grant({"pids": 2}, CEILING) == Limits(
        timeout_s=30.0, memory_mb=512, output_kb=256, pids=2
    )


def test_unknown_keys_are_ignored() -> None:
    assert Limits.from_grant({"gpus": 4}, CEILING) == CEILING


@pytest.mark.parametrize(
    ("raw", "field", "value", "kind"),
    [
        pytest.param({"timeout_s": 2}, "timeout_s", 2.0, float, id="int-timeout-becomes-float"),
        pytest.param({"timeout_s": 2.5}, "timeout_s", 2.5, float, id="float-timeout-stays"),
        pytest.param({"memory_mb": 100}, "memory_mb", 100, int, id="int-memory-stays"),
        pytest.param({"memory_mb": 100.0}, "memory_mb", 100, int, id="float-memory-becomes-int"),
        pytest.param({"output_kb": 8.0}, "output_kb", 8, int, id="float-output-becomes-int"),
        pytest.param({"pids": 3}, "pids", 3, int, id="int-pids-stays"),
        pytest.param({}, "timeout_s", 30.0, float, id="ceiling-timeout-is-float"),
        pytest.param({}, "pids", 16, int, id="ceiling-pids-is-int"),
    ],
)  # fmt: skip
def test_values_take_the_ceilings_type(
    raw: dict[str, int | float], field: str, value: float, kind: type
) -> None:
    got = getattr(Limits.from_grant(raw, CEILING), field)
    assert got == value
    assert type(got) is kind


@pytest.mark.parametrize("field", ["timeout_s", "memory_mb", "output_kb", "pids"])
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(0, id="zero"),
        pytest.param(0.0, id="zero-float"),
        pytest.param(-1, id="negative"),
        pytest.param(-0.5, id="negative-float"),
        pytest.param("10", id="string"),
        pytest.param(None, id="null"),
        pytest.param([1], id="list"),
    ],
)
def test_bad_values_are_refused(field: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=f"limit {field} must be a positive number, got "):
        Limits.from_grant({field: bad}, CEILING)


@pytest.mark.parametrize(
    ("timeout_s", "cpu_s"),
    [(2.0, 3), (2.1, 4), (0.5, 2), (1, 2), (59.9, 61), (60.0, 61)],
)
def test_cpu_seconds_are_ceil_of_timeout_plus_one(timeout_s: float, cpu_s: int) -> None:
    limits = Limits(timeout_s=timeout_s, memory_mb=1, output_kb=1, pids=1)
    assert limits.cpu_s == cpu_s
    assert type(limits.cpu_s) is int


@pytest.mark.parametrize("field", ["memory_mb", "output_kb", "pids"])
def test_fraction_below_one_of_an_integer_limit_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Limits.from_grant({field: 0.5}, CEILING)


def test_nan_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Limits.from_grant({"timeout_s": float("nan")}, CEILING)
