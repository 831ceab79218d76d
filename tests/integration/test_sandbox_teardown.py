"""A call's answer comes only once nothing of its sandbox is left (sandbox.finish),
with real bwrap and the call's real cgroups.

The groups themselves are removed in the background after the answer; here that
removal is held back until the test has looked inside them.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import world_traversable_tmpdir

import sandbox_runner.sandbox as sandbox_module
from sandbox_runner import cgroups
from sandbox_runner.limits import Limits
from sandbox_runner.sandbox import Sandbox, finish, start

pytestmark = pytest.mark.integration

# Answers, and leaves a daemon behind: double-forked, its own session, stdio closed.
DAEMON_TOOL = """
import json, os, sys, time
json.load(sys.stdin)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(30)
    os._exit(0)
os.wait()
json.dump({"left": "a daemon"}, sys.stdout)
"""


@pytest.fixture
def tool_dir() -> Iterator[Path]:
    root = world_traversable_tmpdir("regate-teardown-tool-")
    (root / "daemon.py").write_text(DAEMON_TOOL)
    (root / "daemon.py").chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("run", range(5))  # the race it guards against is not every time
def test_nothing_of_a_call_is_left_at_its_answer(
    tool_dir: Path, monkeypatch: pytest.MonkeyPatch, run: int
) -> None:
    support = cgroups.detect()
    if support is None:
        pytest.skip("needs cgroups (root, memory and pids controllers)")
    held: list[Callable[[], None]] = []
    monkeypatch.setattr(sandbox_module, "_in_background", held.append)
    sandbox = Sandbox("bwrap", 65534, 65534, cgroups=support)

    async def call() -> tuple[bool, set[int], list[Path]]:
        started = await start(
            sandbox, tool_dir, ("python3", "-I", "-S", "daemon.py"), Limits(5, 64, 16, 8)
        )
        assert started.cgroup is not None
        outcome = await finish(sandbox, started, {})
        left = started.cgroup.members()  # at the answer, before any removal
        return outcome.ok, left, sorted(started.cgroup.dirs)

    ok, left, dirs = asyncio.run(call())
    assert ok
    assert left == set(), "processes of the call outlived its answer"
    assert all(d.exists() for d in dirs)  # so `left` was read from the real groups
    for remove in held:
        remove()
    assert not any(d.exists() for d in dirs), "the call's groups were not removed"
