"""Pre-started sandboxes, so a call does not wait for bwrap and the interpreter to start.

Per tool, up to `size` sandboxes are started ahead of time — exactly as a call
would start one (sandbox.start: same argv, seccomp filter, cgroups, rlimits, uid
drop) — and wait with the tool's stdin open. A call takes one, delivers its
arguments (its timeout starts then), and the sandbox is destroyed after that one
call like any other: nothing, not even a process, is shared between two calls.

Sandboxes are pooled under everything they were started with: the tool's
directory, entrypoint and limits. A call only ever takes one started with its own
grant's limits; when there is none it starts a fresh sandbox, as without a pool.
A tool is kept warm from its first call on, up to the `max_tools` most recently
used ones, so memory follows the tools in use, not every tool the runner knows.

A background task keeps each pool full: it drops sandboxes that died while
waiting (killed, out of memory) and starts replacements. Starting one forks the
runner (from a worker thread: sandbox_runner/spawn.py) and costs the machine a
sandbox's start-up CPU, so refills run between calls when they can (after each
call ends, or `check_s` at the latest). A tool whose
sandboxes fail to start, or die while waiting, is retried with a growing back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from sandbox_runner.limits import Limits
from sandbox_runner.sandbox import Started, discard

log = structlog.get_logger("regate.runner.pool")

MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class PoolKey:
    tool_dir: Path
    entrypoint: tuple[str, ...]
    limits: Limits


Starter = Callable[[PoolKey], Awaitable[Started]]


@dataclass
class _Tool:
    idle: deque[Started] = field(default_factory=deque)
    setbacks: int = 0  # failed starts and deaths while waiting, since one last served
    retry_at: float = 0.0
    started: int = 0
    served: int = 0
    replaced: int = 0  # died while waiting, and replaced

    def backoff(self) -> float:
        self.setbacks += 1
        delay = min(MAX_BACKOFF_S, 0.5 * 2.0**self.setbacks)
        self.retry_at = time.monotonic() + delay
        return delay


class SandboxPool:
    def __init__(
        self, start: Starter, size: int, *, max_tools: int = 64, check_s: float = 0.5
    ) -> None:
        if size < 1:
            raise ValueError("a pool holds at least one sandbox per tool")
        self._start = start
        self.size = size
        self.max_tools = max_tools
        self.check_s = check_s
        self._tools: OrderedDict[PoolKey, _Tool] = OrderedDict()
        self._wake = asyncio.Event()
        self._busy = 0  # calls running now
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._reaping: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        self._task = asyncio.create_task(self._keep_full(), name="sandbox-pool")

    def take(self, key: PoolKey) -> Started | None:
        """A live sandbox started for exactly this key, or None: start a fresh one."""
        tool = self._tools.get(key)
        if tool is None:
            if not self._closed:
                self._keep_warm(key)
            return None
        self._tools.move_to_end(key)  # most recently used last
        while tool.idle:
            sandbox = tool.idle.popleft()
            if sandbox.alive:
                sandbox.started_at = time.perf_counter()  # its wall time starts now
                tool.served += 1
                tool.setbacks = 0
                return sandbox
            self._bury(sandbox, tool)
        return None

    def _keep_warm(self, key: PoolKey) -> None:
        """Keep this tool warm from now on; past `max_tools`, the least recently used
        tool's waiting sandboxes are destroyed to make room."""
        if len(self._tools) >= self.max_tools:
            _, coldest = self._tools.popitem(last=False)
            for sandbox in coldest.idle:
                self._reap(sandbox)
        self._tools[key] = _Tool()
        self._wake.set()

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Around each call, so refills run between calls rather than during them."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            self._wake.set()

    def describe(self) -> dict[str, Any]:
        """For GET /v1/tools: each pooled tool, its waiting sandboxes (by the PID of
        their bwrap) and counters."""
        return {
            "size": self.size,
            "tools": [
                {
                    "tool_dir": str(key.tool_dir),
                    "entrypoint": list(key.entrypoint),
                    "idle_pids": [s.proc.pid for s in tool.idle],
                    "started": tool.started,
                    "served": tool.served,
                    "replaced": tool.replaced,
                }
                for key, tool in self._tools.items()
            ],
        }

    async def close(self) -> None:
        """Stop refilling and destroy every waiting sandbox: none outlives the pool."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        waiting = [s for tool in self._tools.values() for s in tool.idle]
        for tool in self._tools.values():
            tool.idle.clear()
        await asyncio.gather(*(discard(s) for s in waiting), *self._reaping)

    async def _keep_full(self) -> None:
        while True:
            if self._busy:
                await self._wait()  # until a call ends, or check_s at the latest
            if not await self._refill_one():
                await self._wait()

    async def _wait(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.check_s):
                await self._wake.wait()

    async def _refill_one(self) -> bool:
        """Drop dead sandboxes, then start one for the emptiest tool short of `size`."""
        for tool in self._tools.values():
            for sandbox in [s for s in tool.idle if not s.alive]:
                tool.idle.remove(sandbox)
                self._bury(sandbox, tool)
        now = time.monotonic()
        wanting = [
            (len(tool.idle), key)
            for key, tool in self._tools.items()
            if len(tool.idle) < self.size and tool.retry_at <= now
        ]
        if not wanting:
            return False
        key = min(wanting, key=lambda pair: pair[0])[1]
        tool = self._tools[key]
        try:
            sandbox = await self._start(key)
        except Exception as exc:  # a failed start is logged and retried later
            log.warning(
                "pool_start_failed", entrypoint=list(key.entrypoint),
                error=str(getattr(exc, "message", exc)), retry_in_s=tool.backoff(),
            )  # fmt: skip
            return False
        tool.started += 1
        tool.idle.append(sandbox)
        return True

    def _bury(self, sandbox: Started, tool: _Tool) -> None:
        """Reap a sandbox that died while waiting; the refill replaces it (after a
        back-off, so a tool that cannot stay up is not restarted in a loop)."""
        tool.replaced += 1
        log.warning(
            "pooled_sandbox_died", pid=sandbox.proc.pid, status=sandbox.proc.returncode,
            retry_in_s=tool.backoff(),
        )  # fmt: skip
        self._reap(sandbox)
        self._wake.set()

    def _reap(self, sandbox: Started) -> None:
        task = asyncio.create_task(discard(sandbox))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)
