"""Starting a sandbox's process off the event loop (sandbox_runner/spawn.py).

The child's work before its exec (joining cgroups, rlimits, the uid drop) runs
while the loop keeps serving; a start whose caller gives up leaves no process.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox_runner.spawn import spawn

pytestmark = pytest.mark.integration


def wait_for_go(go: int, pid_file: Path | None = None) -> Callable[[], None]:
    """A preexec_fn that holds the child before its exec until a byte arrives on
    `go` (exit 3 after 10 s without one), after writing its pid to `pid_file`."""

    def hold() -> None:
        if pid_file is not None:
            pid_file.write_text(str(os.getpid()))
        ready, _, _ = select.select([go], [], [], 10)
        if not ready:
            os._exit(3)
        os.read(go, 1)

    return hold


def test_the_loop_serves_while_a_child_prepares_its_exec() -> None:
    async def main() -> tuple[bytes, int]:
        go_read, go_write = os.pipe()
        try:
            starting = asyncio.create_task(
                spawn(["/bin/cat"], env={}, pass_fds=(), preexec_fn=wait_for_go(go_read))
            )
            await asyncio.sleep(0.2)  # only runs if the start does not hold the loop
            os.write(go_write, b"x")  # released from the loop: the child may exec now
            proc = await asyncio.wait_for(starting, 10)
        finally:
            os.close(go_read)
            os.close(go_write)
        proc.stdin.write(b"arguments")
        await proc.stdin.drain()
        proc.stdin.close()
        echoed = await proc.stdout.read()
        return echoed, await proc.wait()

    echoed, status = asyncio.run(main())
    assert (echoed, status) == (b"arguments", 0)


def test_a_start_given_up_leaves_no_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"

    async def main() -> None:
        go_read, go_write = os.pipe()
        try:
            starting = asyncio.create_task(
                spawn(
                    ["/bin/sleep", "60"],
                    env={},
                    pass_fds=(),
                    preexec_fn=wait_for_go(go_read, pid_file),
                )
            )
            await asyncio.sleep(0.2)
            starting.cancel()  # the caller gives up while the child is before its exec
            await asyncio.sleep(0.1)
            os.write(go_write, b"x")
            with pytest.raises(asyncio.CancelledError):
                await starting
        finally:
            os.close(go_read)
            os.close(go_write)

    asyncio.run(main())
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: not even a zombie is left


def test_a_killed_child_reports_the_signal() -> None:
    async def main() -> tuple[int | None, int, int | None]:
        proc = await spawn(["/bin/sleep", "60"], env={}, pass_fds=(), preexec_fn=lambda: None)
        before = proc.returncode
        os.kill(proc.pid, signal.SIGKILL)
        status = await asyncio.wait_for(proc.drain_and_wait(), 10)
        return before, status, proc.returncode

    assert asyncio.run(main()) == (None, -signal.SIGKILL, -signal.SIGKILL)
