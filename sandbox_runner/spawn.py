"""Start a sandbox's process without stalling the runner's event loop.

asyncio's `create_subprocess_exec` forks and then waits, inside the event loop,
until the child has exec'd. A sandbox's child works before its exec: the
`preexec_fn` joins the call's cgroups (on cgroup v1 the first join waits for an
RCU grace period, ~15 ms here), sets rlimits and drops to the sandbox uid. Every
start, a pool refill's included, would hold up every request of the runner for
that long. Here `subprocess.Popen` runs in a worker thread; its pipes are then
attached to the loop as asyncio streams, and its exit is watched through a pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence


class ChildProcess:
    """A started child: its stdin as an asyncio stream writer, stdout and stderr as
    stream readers, and `wait()` for its exit status (negative: killed by a signal)."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        exited: asyncio.Future[int],
    ) -> None:
        self._popen = popen
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._exited = exited

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    async def drain_and_wait(self) -> int:
        """Close stdin, read stdout and stderr to their end (discarding), reap it."""
        self.stdin.close()
        await asyncio.gather(_drain(self.stdout), _drain(self.stderr))
        return await self.wait()


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    pass_fds: Sequence[int],
    preexec_fn: Callable[[], None],
) -> ChildProcess:
    """Start `argv` in a new session with piped stdin, stdout and stderr."""
    loop = asyncio.get_running_loop()

    def start() -> subprocess.Popen[bytes]:  # in a worker thread
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            env=env,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )

    started = loop.run_in_executor(None, start)
    try:
        popen = await asyncio.shield(started)
    except asyncio.CancelledError:
        # The thread completes the start regardless: end what it started.
        with contextlib.suppress(Exception):
            _abandon(await started)
        raise
    transports: list[asyncio.BaseTransport] = []
    try:
        return await _attach(loop, popen, transports)
    except BaseException:
        for transport in transports:
            transport.close()  # off the loop at once; its pipe is closed below
        _abandon(popen)
        raise


async def _attach(
    loop: asyncio.AbstractEventLoop,
    popen: subprocess.Popen[bytes],
    transports: list[asyncio.BaseTransport],
) -> ChildProcess:
    assert popen.stdin is not None
    assert popen.stdout is not None
    assert popen.stderr is not None
    stdout, stderr = asyncio.StreamReader(), asyncio.StreamReader()
    for pipe, reader in ((popen.stdout, stdout), (popen.stderr, stderr)):
        transport, _ = await loop.connect_read_pipe(
            functools.partial(asyncio.StreamReaderProtocol, reader), pipe
        )
        transports.append(transport)
    writer, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
    transports.append(writer)
    stdin = asyncio.StreamWriter(writer, protocol, None, loop)
    exited: asyncio.Future[int] = loop.create_future()
    pidfd = os.pidfd_open(popen.pid)  # readable once the child has exited

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        returncode = popen.wait()  # it has exited: this reaps it at once
        writer.close()  # what was not delivered, no one will read
        if not exited.done():
            exited.set_result(returncode)

    loop.add_reader(pidfd, reap)
    return ChildProcess(popen, stdin, stdout, stderr, exited)


def _abandon(popen: subprocess.Popen[bytes]) -> None:
    """Kill a child no caller will get (its session: the sandbox program and what
    it has started so far), close our ends of its pipes, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    for pipe in (popen.stdin, popen.stdout, popen.stderr):
        if pipe is not None:
            pipe.close()
    popen.wait()


async def _drain(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass
