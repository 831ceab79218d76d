"""What a sandboxed run comes to: a result, or one error type with an actionable message."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

from regate.errors import BadRequest
from regate.jsonbody import parse_json
from sandbox_runner.limits import Limits


@dataclass
class RunOutcome:
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "metrics": self.metrics}
        if self.ok:
            body["result"] = self.result
        else:
            body["error"] = self.error
        return body


@dataclass(frozen=True)
class Observed:
    """Everything the runner saw of one run."""

    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    output_over_cap: bool
    memory_hit: bool = False
    pids_hit: bool = False
    cpu_s: float | None = None  # CPU time of the whole call, when cgroups account it
    stderr_total: int = 0  # bytes the tool wrote to stderr; only the tail is kept


def classify(limits: Limits, seen: Observed, metrics: dict[str, Any]) -> RunOutcome:
    def fail(kind: str, message: str) -> RunOutcome:
        return RunOutcome(ok=False, error={"type": kind, "message": message}, metrics=metrics)

    rc = seen.returncode
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    tail = seen.stderr.decode("utf-8", "replace").strip()[-500:]
    # A cgroup limit the tool ran into explains a failure (or a hang) best.
    if seen.memory_hit and (rc != 0 or seen.timed_out):
        return fail(
            "memory_limit",
            f"the tool ran out of its {limits.memory_mb} MiB of memory; raise memory_mb in"
            " its manifest if it really needs more",
        )
    if seen.pids_hit and (rc != 0 or seen.timed_out):
        return fail(
            "pids_limit",
            f"the tool tried to run more than {limits.pids} processes at once and was"
            " stopped; raise pids in its manifest if it really needs more",
        )
    # nsjail's --time_limit backstop (timeout + 2 s) SIGKILLs a tool the runner has not
    # killed at its own timeout yet, which happens when the machine starves the runner.
    killed_late = sig == signal.SIGKILL and metrics.get("wall_ms", 0) >= limits.timeout_s * 1000
    if seen.timed_out or killed_late:
        return fail(
            "timeout",
            f"the tool ran past its {limits.timeout_s:g} s timeout and was killed with every"
            " process it started; make it faster or ask for a longer timeout_s",
        )
    if seen.output_over_cap:
        return fail(
            "output_limit",
            f"the tool wrote more than {limits.output_kb} KiB to stdout and was stopped;"
            " return less, or raise output_kb in its manifest",
        )
    # SIGXCPU at the soft limit; a tool that is its namespace's pid 1 (nsjail) ignores
    # it and meets SIGKILL at the hard limit, so measured CPU time decides then.
    cpu_spent = seen.cpu_s is not None and seen.cpu_s >= limits.cpu_s
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_spent):
        return fail("cpu_limit", "the tool used up its CPU time and was stopped")
    if sig == signal.SIGXFSZ:
        return fail("file_size_limit", "the tool wrote a file larger than the sandbox allows")
    if rc != 0 and ("MemoryError" in tail or "Cannot allocate memory" in tail):
        return fail(
            "memory_limit",
            f"the tool ran out of its {limits.memory_mb} MiB of memory; raise memory_mb in"
            " its manifest if it really needs more",
        )
    if rc != 0 and "File too large" in tail:
        return fail("file_size_limit", "the tool wrote a file larger than the sandbox allows")
    if rc != 0 and "No space left on device" in tail:
        return fail("disk_limit", "the tool filled its temporary disk (/tmp) and failed")
    if rc != 0 and "Too many open files" in tail:
        return fail("open_files_limit", "the tool opened more files than the sandbox allows")
    if sig:
        return fail("crashed", f"the tool was killed by signal {_signal_name(sig)}")
    if rc != 0:
        return fail("tool_error", f"the tool exited with status {rc}: {tail or 'no stderr'}")
    try:
        # The same strict parser as for requests: no NaN/Infinity, no duplicate keys,
        # no lone surrogates, UTF-8 only — a result must survive JSON encoding again.
        result = parse_json(seen.stdout, what="the tool's stdout")
    except BadRequest as exc:
        return fail("invalid_output", f"the tool's stdout was not one JSON value: {exc}")
    return RunOutcome(ok=True, result=result, metrics=metrics)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
