"""Run one tool call inside a fresh bubblewrap sandbox and report what happened.

The tool sees: a read-only /usr (and the usual /bin, /lib symlinks), its own
directory read-only at /tool, a size-capped tmpfs at /tmp, a private /proc and
/dev, no network (only `lo`), an environment of PATH/HOME/LANG only, a new session,
no capabilities, no way to gain privileges, and a seccomp filter. It runs as an
unprivileged uid: a root runner drops to `sandbox_uid` before bwrap starts, so
nothing inside is ever host root. Limits: wall time (the whole pid namespace dies
with it), rlimits (CPU, address space, file size, open files, processes), and per
call cgroups for memory and pids when the machine offers them.
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
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from regate.errors import RegateError
from sandbox_runner import seccomp
from sandbox_runner.cgroups import CallCgroup, CgroupSupport
from sandbox_runner.limits import Limits
from sandbox_runner.outcome import Observed, RunOutcome, classify

STDERR_CAP = 8 * 1024
TMPFS_MB = 16
FILE_SIZE_CAP = 8 * 1024 * 1024  # below the tmpfs size, so it is what a big file hits
OPEN_FILES_CAP = 64
KILL_GRACE_S = 2.0
# Processes one sandbox itself needs besides the tool's (bwrap, its init).
SANDBOX_OVERHEAD_PIDS = 4


class SandboxUnavailable(RegateError):
    status = 503
    code = "sandbox_unavailable"


@dataclass(frozen=True)
class Sandbox:
    bwrap: str
    uid: int
    gid: int
    cgroups: CgroupSupport | None = None
    # RLIMIT_NPROC counts every process of the sandbox uid, across sandboxes: it is
    # a machine-wide backstop, the per-call limit is the pids cgroup.
    nproc_budget: int = 512

    def resolve(self) -> str:
        """The bwrap binary, or `SandboxUnavailable`: never run a tool unconfined."""
        path = shutil.which(self.bwrap)
        if path is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed, so no tool can run; install it with"
                " 'apt-get install bubblewrap' (or set runner.bwrap to its path)"
            )
        return path

    @property
    def drops_privileges(self) -> bool:
        return os.geteuid() == 0

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "bwrap",
            "seccomp": True,
            "cgroups": self.cgroups.describe() if self.cgroups else "unavailable (rlimits only)",
            "uid": self.uid if self.drops_privileges else os.geteuid(),
        }


def bwrap_argv(
    bwrap: str, tool_dir: Path, entrypoint: Sequence[str], *, seccomp_fd: int, info_fd: int
) -> list[str]:
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
        "--size", str(TMPFS_MB * 1024 * 1024), "--tmpfs", "/tmp",  # noqa: S108 - the sandbox's own tmpfs
        "--ro-bind", str(tool_dir), "/tool",
        "--remount-ro", "/",  # the sandbox's root tmpfs: only /tmp stays writable
        "--chdir", "/tool",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",  # noqa: S108 - inside the sandbox
        "--setenv", "LANG", "C.UTF-8",
        "--seccomp", str(seccomp_fd),
        "--info-fd", str(info_fd),
        "--",
        *entrypoint,
    ]  # fmt: skip
    return argv


def _child_setup(
    sandbox: Sandbox, limits: Limits, cgroup_procs: Sequence[str]
) -> Callable[[], None]:
    """Runs in the child between fork and exec: join the call's cgroups (as root),
    set rlimits, then drop to the sandbox uid for good."""
    cpu = math.ceil(limits.timeout_s) + 1
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


async def run_tool(
    sandbox: Sandbox,
    tool_dir: Path,
    entrypoint: Sequence[str],
    arguments: Mapping[str, Any],
    limits: Limits,
) -> RunOutcome:
    bwrap = sandbox.resolve()
    cgroup = None
    if sandbox.cgroups is not None:
        # tmpfs pages are charged to the group too, hence the headroom.
        memory_mb = limits.memory_mb + TMPFS_MB + 16
        cgroup = CallCgroup.create(sandbox.cgroups, memory_mb, limits.pids + SANDBOX_OVERHEAD_PIDS)
    try:
        return await _run(sandbox, bwrap, cgroup, tool_dir, entrypoint, arguments, limits)
    finally:
        if cgroup is not None:
            cgroup.remove()  # kills anything left behind, then removes the groups


async def _run(
    sandbox: Sandbox,
    bwrap: str,
    cgroup: CallCgroup | None,
    tool_dir: Path,
    entrypoint: Sequence[str],
    arguments: Mapping[str, Any],
    limits: Limits,
) -> RunOutcome:
    seccomp_fd = seccomp.filter_fd()
    info_read, info_write = os.pipe()
    os.set_blocking(info_read, False)
    started = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *bwrap_argv(bwrap, tool_dir, entrypoint, seccomp_fd=seccomp_fd, info_fd=info_write),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},  # bwrap itself, and so /proc/1/environ inside, holds nothing of ours
            start_new_session=True,
            pass_fds=(seccomp_fd, info_write),
            preexec_fn=_child_setup(sandbox, limits, cgroup.proc_files() if cgroup else []),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(info_read)
        raise SandboxUnavailable(f"the sandbox could not be started: {exc}") from exc
    finally:
        os.close(seccomp_fd)
        os.close(info_write)
    try:
        seen = await _supervise(proc, info_read, arguments, limits)
    finally:
        os.close(info_read)
    metrics = {
        "wall_ms": round((time.perf_counter() - started) * 1000, 3),
        "exit_code": seen.returncode,
        "stdout_bytes": len(seen.stdout),
        "stderr_bytes": len(seen.stderr),
        "sandbox": "bwrap",
    }
    if cgroup is not None:
        seen = replace(seen, memory_hit=cgroup.memory_hit(), pids_hit=cgroup.pids_hit())
    return classify(limits, seen, metrics)


async def _supervise(
    proc: asyncio.subprocess.Process,
    info_fd: int,
    arguments: Mapping[str, Any],
    limits: Limits,
) -> Observed:
    output_cap = limits.output_kb * 1024
    over_cap = False
    init_pid: int | None = None

    def kill() -> None:
        # Kill the sandbox's pid 1: the kernel then kills every process in its pid
        # namespace (double-forked, setsid-ed, all) and bwrap exits on its own. Only
        # if bwrap has not yet said who that is, kill bwrap's process group.
        nonlocal init_pid
        init_pid = init_pid or _sandbox_init_pid(info_fd)
        with contextlib.suppress(ProcessLookupError):
            if init_pid is not None:
                os.kill(init_pid, signal.SIGKILL)
            else:
                os.killpg(proc.pid, signal.SIGKILL)

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
        kill()
        stdout, stderr = await asyncio.wait_for(readers, KILL_GRACE_S)
        returncode = await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    return Observed(returncode, stdout, stderr, timed_out, over_cap)


def _sandbox_init_pid(info_fd: int) -> int | None:
    """`child-pid` from bwrap's --info-fd JSON, if it has been written."""
    try:
        info = json.loads(os.read(info_fd, 4096) or b"null")
    except (BlockingIOError, OSError, ValueError):
        return None
    pid = info.get("child-pid") if isinstance(info, dict) else None
    return pid if isinstance(pid, int) and pid > 1 else None
