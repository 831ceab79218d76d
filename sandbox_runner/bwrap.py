"""Run one tool call inside a fresh bubblewrap sandbox and report what happened.

The tool sees: a read-only /usr (and the usual /bin, /lib symlinks), its own
directory read-only at /tool, a size-capped tmpfs at /tmp, a private /proc and
/dev, no network (only `lo`), an empty environment but PATH/HOME/LANG, a new
session, and no capabilities. It runs as an unprivileged uid: a root runner drops
to `sandbox_uid` before bwrap starts, so nothing inside is ever host root.
Arguments go in as JSON on stdin; the tool's JSON result comes out on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regate.errors import RegateError

STDERR_CAP = 8 * 1024
TMPFS_BYTES = 16 * 1024 * 1024
FILE_SIZE_CAP = 16 * 1024 * 1024
OPEN_FILES_CAP = 64
KILL_GRACE_S = 2.0


class SandboxUnavailable(RegateError):
    status = 503
    code = "sandbox_unavailable"


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    output_kb: int
    pids: int

    @classmethod
    def from_grant(cls, raw: Mapping[str, int | float]) -> Limits:
        return cls(
            timeout_s=float(raw["timeout_s"]),
            memory_mb=int(raw["memory_mb"]),
            output_kb=int(raw["output_kb"]),
            pids=int(raw["pids"]),
        )


@dataclass(frozen=True)
class Sandbox:
    bwrap: str
    uid: int
    gid: int

    def resolve(self) -> str:
        """The bwrap binary, or `SandboxUnavailable`: never run a tool unconfined."""
        path = shutil.which(self.bwrap)
        if path is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed, so no tool can run; install it with"
                " 'apt-get install bubblewrap' (or set runner.bwrap to its path)"
            )
        return path


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


def bwrap_argv(bwrap: str, tool_dir: Path, entrypoint: Sequence[str]) -> list[str]:
    argv = [
        bwrap,
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup namespaces: no network
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the runner's terminal
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--symlink",
        "usr/lib",
        "/lib",
    ]
    if Path("/lib64").exists():
        argv += ["--symlink", "usr/lib64", "/lib64"]
    argv += [
        "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",  # noqa: S108 - the sandbox's own tmpfs
        "--ro-bind", str(tool_dir), "/tool",
        "--chdir", "/tool",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",  # noqa: S108 - inside the sandbox
        "--setenv", "LANG", "C.UTF-8",
        "--",
        *entrypoint,
    ]  # fmt: skip
    return argv


def _rlimits(limits: Limits) -> Callable[[], None]:
    cpu = math.ceil(limits.timeout_s) + 1
    memory = limits.memory_mb * 1024 * 1024

    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_CAP, FILE_SIZE_CAP))
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_CAP, OPEN_FILES_CAP))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


async def run_tool(
    sandbox: Sandbox,
    tool_dir: Path,
    entrypoint: Sequence[str],
    arguments: Mapping[str, Any],
    limits: Limits,
) -> RunOutcome:
    bwrap = sandbox.resolve()
    drop: dict[str, Any] = {}
    if os.geteuid() == 0:
        # bwrap started by root makes the tool host root; drop first (DESIGN §7).
        drop = {"user": sandbox.uid, "group": sandbox.gid, "extra_groups": []}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *bwrap_argv(bwrap, tool_dir, entrypoint),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={},
        start_new_session=True,
        preexec_fn=_rlimits(limits),
        **drop,
    )
    output_cap = limits.output_kb * 1024
    over_cap = asyncio.Event()

    async def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(arguments).encode())
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the tool did not read its arguments; its exit status tells the rest

    # Both readers always read to EOF (discarding past their caps): on Python 3.11
    # `proc.wait()` only returns once every pipe is drained.
    async def read_stdout() -> bytes:
        assert proc.stdout is not None
        kept = b""
        while chunk := await proc.stdout.read(65536):
            if over_cap.is_set():
                continue
            kept += chunk
            if len(kept) > output_cap:
                over_cap.set()
                _kill(proc)
        return kept[:output_cap]

    async def read_stderr() -> bytes:
        assert proc.stderr is not None
        kept = b""
        while chunk := await proc.stderr.read(65536):
            kept = (kept + chunk)[-STDERR_CAP:]  # keep the tail: that is where errors are
        return kept

    readers = asyncio.gather(read_stdout(), read_stderr())
    timed_out = False
    try:
        async with asyncio.timeout(limits.timeout_s):
            await feed()
            stdout, stderr = await asyncio.shield(readers)
            returncode = await proc.wait()
    except TimeoutError:
        timed_out = True
        _kill(proc)
        # Killing bwrap tears down the pid namespace, so the pipes reach EOF.
        stdout, stderr = await asyncio.wait_for(readers, KILL_GRACE_S)
        returncode = await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    metrics = {
        "wall_ms": round((time.perf_counter() - started) * 1000, 3),
        "exit_code": returncode,
        "stdout_bytes": len(stdout),
        "sandbox": "bwrap",
    }
    return _outcome(limits, timed_out, over_cap.is_set(), returncode, stdout, stderr, metrics)


def _kill(proc: asyncio.subprocess.Process) -> None:
    # bwrap leads its own process group; killing it tears down the pid namespace,
    # and with it every process the tool started, forked or setsid-ed.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _outcome(
    limits: Limits,
    timed_out: bool,
    over_cap: bool,
    returncode: int,
    stdout: bytes,
    stderr: bytes,
    metrics: dict[str, Any],
) -> RunOutcome:
    def fail(kind: str, message: str) -> RunOutcome:
        return RunOutcome(ok=False, error={"type": kind, "message": message}, metrics=metrics)

    tail = stderr.decode("utf-8", "replace").strip()[-500:]
    if timed_out:
        return fail(
            "timeout", f"the tool ran past its {limits.timeout_s:g} s timeout and was killed"
        )
    if over_cap:
        return fail("output_limit", f"the tool wrote more than {limits.output_kb} KiB to stdout")
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return fail("cpu_limit", "the tool used up its CPU time and was stopped")
    if "MemoryError" in tail or "Cannot allocate memory" in tail:
        return fail("memory_limit", f"the tool ran out of its {limits.memory_mb} MiB of memory")
    if returncode < 0 or returncode > 128:
        sig = -returncode if returncode < 0 else returncode - 128
        return fail("crashed", f"the tool was killed by signal {sig}")
    if returncode != 0:
        return fail(
            "tool_error", f"the tool exited with status {returncode}: {tail or 'no stderr'}"
        )
    try:
        result = json.loads(stdout)
    except ValueError:
        return fail("invalid_output", "the tool's stdout was not one JSON value")
    return RunOutcome(ok=True, result=result, metrics=metrics)
