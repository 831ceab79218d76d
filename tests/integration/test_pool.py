"""The runner's pool of pre-started sandboxes (sandbox_runner/pool.py), with real bwrap.

A pooled sandbox serves exactly one call and is destroyed; nothing one call leaves
behind is visible to the next; the pool refills, replaces a sandbox killed while
waiting, never hands a sandbox to a call with other limits, starts the timeout at
delivery, and leaves no process behind when it closes — nor when the runner stops.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningStack, start_stack, stop_stack, world_traversable_tmpdir

from sandbox_runner import cgroups
from sandbox_runner.limits import Limits
from sandbox_runner.pool import PoolKey, SandboxPool
from sandbox_runner.sandbox import Sandbox, Started, discard, finish, start

pytestmark = pytest.mark.integration

# Writes into its sandbox's /tmp, reports what it found there, and a value drawn
# before it read its arguments (so at start-up, possibly long before the call).
STATE_TOOL = """
import json, os, sys
born = os.urandom(8).hex()
args = json.load(sys.stdin)
marker = "/tmp/left-behind"
found = open(marker).read() if os.path.exists(marker) else None
with open(marker, "w") as fh:
    fh.write(args["secret"])
json.dump({"born": born, "found": found, "uid": os.getuid()}, sys.stdout)
"""
LIMITS = Limits(timeout_s=1, memory_mb=64, output_kb=16, pids=8)


@pytest.fixture(scope="module")
def tool_dir() -> Iterator[Path]:
    root = world_traversable_tmpdir("regate-pool-tool-")
    (root / "state.py").write_text(STATE_TOOL)
    (root / "state.py").chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def key_for(tool_dir: Path, limits: Limits = LIMITS) -> PoolKey:
    return PoolKey(tool_dir, ("python3", "-I", "-S", "state.py"), limits)


def with_pool(
    size: int,
    test: Callable[[SandboxPool, Sandbox], Awaitable[None]],
    check_s: float = 0.1,
    max_tools: int = 8,
) -> None:
    sandbox = Sandbox("bwrap", 65534, 65534, cgroups=cgroups.detect())

    async def start_for(key: PoolKey) -> Started:
        return await start(sandbox, key.tool_dir, key.entrypoint, key.limits)

    async def run() -> None:
        pool = SandboxPool(start_for, size, check_s=check_s, max_tools=max_tools)
        pool.open()
        try:
            await test(pool, sandbox)
        finally:
            await pool.close()

    asyncio.run(run())


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


def idle_pids(pool: SandboxPool) -> list[int]:
    return [pid for tool in pool.describe()["tools"] for pid in tool["idle_pids"]]


def counters(pool: SandboxPool) -> dict[str, int]:
    tool = pool.describe()["tools"][0]
    return {name: tool[name] for name in ("started", "served", "replaced")}


async def call(pool: SandboxPool, sandbox: Sandbox, key: PoolKey, secret: str) -> dict[str, Any]:
    taken = pool.take(key)
    assert taken is not None, "no pre-started sandbox was waiting"
    outcome = await finish(sandbox, taken, {"secret": secret})
    assert outcome.ok, outcome.as_json()
    assert taken.proc.returncode is not None, "the sandbox outlived its call"
    result: dict[str, Any] = outcome.result
    return {"pid": taken.proc.pid, **result}


def test_each_pooled_sandbox_serves_one_call_and_leaves_nothing_for_the_next(
    tool_dir: Path,
) -> None:
    key = key_for(tool_dir)

    async def test(pool: SandboxPool, sandbox: Sandbox) -> None:
        assert pool.take(key) is None  # the first call of a tool finds nothing waiting
        await until(lambda: len(idle_pids(pool)) == 2, "the tool is kept warm")
        results = []
        for secret in ("first-secret", "second-secret", "third-secret"):
            await until(lambda: len(idle_pids(pool)) >= 1, "a sandbox waits")
            results.append(await call(pool, sandbox, key, secret))
            assert results[-1]["pid"] not in idle_pids(pool), "a used sandbox went back"
        assert len({r["pid"] for r in results}) == 3, results
        assert len({r["born"] for r in results}) == 3, results
        assert [r["found"] for r in results] == [None, None, None], "state leaked between calls"
        assert {r["uid"] for r in results} == {65534}

    with_pool(2, test)


def test_the_pool_refills_after_each_call(tool_dir: Path) -> None:
    key = key_for(tool_dir)

    async def test(pool: SandboxPool, sandbox: Sandbox) -> None:
        pool.take(key)
        await until(lambda: len(idle_pids(pool)) == 2, "the pool is full")
        before = counters(pool)
        first = await call(pool, sandbox, key, "a")
        second = await call(pool, sandbox, key, "b")
        await until(lambda: len(idle_pids(pool)) == 2, "the pool is full again")
        assert counters(pool)["started"] == before["started"] + 2
        assert counters(pool)["served"] == before["served"] + 2
        assert {first["pid"], second["pid"]}.isdisjoint(idle_pids(pool))

    with_pool(2, test)


def test_a_pooled_sandbox_killed_while_waiting_is_replaced_and_never_served(
    tool_dir: Path,
) -> None:
    key = key_for(tool_dir)

    async def test(pool: SandboxPool, sandbox: Sandbox) -> None:
        pool.take(key)
        await until(lambda: len(idle_pids(pool)) == 1, "the pool is full")
        victim = idle_pids(pool)[0]
        os.kill(victim, signal.SIGKILL)
        await until(lambda: counters(pool)["replaced"] == 1, "the dead sandbox is noticed")
        await until(
            lambda: len(idle_pids(pool)) == 1 and victim not in idle_pids(pool),
            "a replacement waits",
        )
        result = await call(pool, sandbox, key, "after the kill")
        assert result["pid"] != victim
        assert result["found"] is None

    with_pool(1, test)


def test_a_call_with_other_limits_never_takes_a_sandbox_started_with_these(
    tool_dir: Path,
) -> None:
    key = key_for(tool_dir)
    tighter = key_for(tool_dir, Limits(timeout_s=1, memory_mb=32, output_kb=16, pids=8))

    async def test(pool: SandboxPool, sandbox: Sandbox) -> None:
        pool.take(key)
        await until(lambda: len(idle_pids(pool)) == 2, "the pool is full")
        assert pool.take(tighter) is None
        assert len(idle_pids(pool)) == 2  # the others still wait for their own calls

    with_pool(2, test)


def test_the_timeout_starts_when_the_arguments_are_delivered(tool_dir: Path) -> None:
    key = key_for(tool_dir)  # timeout_s = 1

    async def test(pool: SandboxPool, sandbox: Sandbox) -> None:
        pool.take(key)
        await until(lambda: len(idle_pids(pool)) == 1, "the pool is full")
        await asyncio.sleep(1.5)  # waiting in the pool longer than the call may run
        result = await call(pool, sandbox, key, "late")
        assert result["found"] is None

    with_pool(1, test)


def test_past_max_tools_the_least_recently_used_tool_is_let_go(tool_dir: Path) -> None:
    first, second = key_for(tool_dir), key_for(tool_dir, Limits(1, 32, 16, 8))
    gone: list[int] = []

    async def test(pool: SandboxPool, sandbox: Sandbox) -> None:
        pool.take(first)
        await until(lambda: len(idle_pids(pool)) == 1, "the first tool is warm")
        gone.extend(descendants(idle_pids(pool)))
        pool.take(second)  # a second tool, with room for one: the first is let go
        await until(lambda: len(idle_pids(pool)) == 1, "the second tool is warm")
        assert [t["tool_dir"] for t in pool.describe()["tools"]] == [str(tool_dir)]
        taken = pool.take(second)
        assert taken is not None
        await discard(taken)
        await until(lambda: not any(live_process(p) for p in gone), "the first's are ended")

    with_pool(1, test, max_tools=1)


def live_process(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def descendants(pids: list[int]) -> set[int]:
    """These processes and everything under them, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def test_closing_the_pool_ends_every_waiting_sandbox(tool_dir: Path) -> None:
    key = key_for(tool_dir)
    seen: set[int] = set()
    groups: list[Path] = []

    async def test(pool: SandboxPool, sandbox: Sandbox) -> None:
        pool.take(key)
        await until(lambda: len(idle_pids(pool)) == 3, "the pool is full")
        seen.update(descendants(idle_pids(pool)))
        assert len(seen) >= 6, seen  # each: bwrap, the sandbox's init, the tool
        for tool in pool._tools.values():
            groups.extend(d for s in tool.idle if s.cgroup for d in s.cgroup.dirs)

    with_pool(3, test)  # closes the pool on the way out
    deadline = time.monotonic() + 10
    while any(live_process(p) for p in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in seen if live_process(p)], "a pooled process outlived the pool"
    while any(g.exists() for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [g for g in groups if g.exists()], "a pooled sandbox's cgroup was left"


def test_a_stopped_runner_leaves_no_pooled_sandbox_behind() -> None:
    running: RunningStack = start_stack("regate-pool-stop-", runner_config="pool_size = 2")
    try:
        for n in range(2):
            response = running.invoke("calculator", "add", {"a": n, "b": 1})
            assert response.json()["result"] == {"sum": n + 1}, response.text
            deadline = time.monotonic() + 20
            while not waiting_pids(running) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert response.json()["metrics"]["pooled"] is True
        waiting = waiting_pids(running)
        assert waiting, "the runner kept no sandbox warm"
        seen = descendants(waiting)
        running.stack.service("runner").process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        running.stack.service("runner").process.wait(15)  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while any(live_process(p) for p in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in seen if live_process(p)], "a pooled sandbox outlived the runner"
    finally:
        stop_stack(running)


def waiting_pids(running: RunningStack) -> list[int]:
    with running.runner_client() as client:
        pool = client.get("/v1/tools").json()["pool"]
    return [pid for tool in pool["tools"] for pid in tool["idle_pids"]]


def test_the_runner_lists_its_pool_and_keeps_a_called_tool_warm(
    pooled_stack: RunningStack,
) -> None:
    response = pooled_stack.invoke("calculator", "stats", {"values": [1, 2, 3]})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 20
    while len(waiting_pids(pooled_stack)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with pooled_stack.runner_client() as client:
        pool = client.get("/v1/tools").json()["pool"]
    assert pool["size"] == pooled_stack.settings.runner.pool_size == 2
    stats = [t for t in pool["tools"] if t["entrypoint"][-1] == "stats.py"]
    assert len(stats) == 1, pool
    assert len(stats[0]["idle_pids"]) == 2
    assert stats[0]["started"] >= 2
