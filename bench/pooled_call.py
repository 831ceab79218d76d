"""Where a pooled sandboxed call's time goes, in-process (no HTTP, no gateway).

    .venv/bin/python bench/pooled_call.py [--runs 25] [--interval 0.15]

  pooled finish     sandbox.finish on a pre-started sandbox (SandboxPool): arguments
                    delivered -> answer classified -> sandbox torn down
    supervise       of which: delivery to the sandbox's exit (the tool's own time)
    tear down       of which: ending the sandbox, cgroups handed to a thread
  python exit       a pre-started bare `python3 -I -S` doing calculator.add:
                    its arguments delivered -> its exit (no sandbox)
  python os._exit   the same, ending with os._exit(0) after writing its answer:
                    the difference is the interpreter's own finalization

Needs root for the sandbox's cgroups and uid drop (as the runner does).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import sandbox_runner.sandbox as sandbox_module
from sandbox_runner import cgroups
from sandbox_runner.limits import Limits
from sandbox_runner.pool import PoolKey, SandboxPool
from sandbox_runner.sandbox import Sandbox, Started, finish, start

TOOL = Path(__file__).resolve().parents[1] / "examples" / "agents" / "calculator"
KEY = PoolKey(TOOL, ("python3", "-I", "-S", "add.py"), Limits(5, 128, 16, 8))
ADD = "import json, sys; a = json.load(sys.stdin); json.dump({'sum': a['a'] + a['b']}, sys.stdout)"


async def pooled(runs: int, interval_s: float) -> dict[str, list[float]]:
    sandbox = Sandbox("bwrap", 65534, 65534, cgroups=cgroups.detect())
    times: dict[str, list[float]] = {"pooled finish": [], "  supervise": [], "  tear down": []}
    supervise, tear_down = sandbox_module._supervise, sandbox_module._tear_down

    async def timed_supervise(*args: Any) -> Any:
        began = time.perf_counter()
        try:
            return await supervise(*args)
        finally:
            times["  supervise"].append((time.perf_counter() - began) * 1000)

    async def timed_tear_down(started: Started) -> None:
        began = time.perf_counter()
        await tear_down(started)
        times["  tear down"].append((time.perf_counter() - began) * 1000)

    async def start_for(key: PoolKey) -> Started:
        return await start(sandbox, key.tool_dir, key.entrypoint, key.limits)

    sandbox_module._supervise, sandbox_module._tear_down = timed_supervise, timed_tear_down  # type: ignore[assignment]
    pool = SandboxPool(start_for, 2, check_s=0.05)
    pool.open()
    try:
        pool.take(KEY)  # the first call of a tool starts it warm
        while len(times["pooled finish"]) < runs:
            await asyncio.sleep(interval_s)
            with pool.call():  # as the runner does: no refill while a call runs
                started = pool.take(KEY)
                if started is None:
                    continue
                began = time.perf_counter()
                outcome = await finish(sandbox, started, {"a": 1, "b": 2})
                times["pooled finish"].append((time.perf_counter() - began) * 1000)
            assert outcome.ok, outcome.as_json()
    finally:
        await pool.close()
        sandbox_module._supervise, sandbox_module._tear_down = supervise, tear_down  # type: ignore[assignment]
    return times


def python_exit(code: str, runs: int, interval_s: float) -> list[float]:
    out = []
    for _ in range(runs):
        proc = subprocess.Popen(
            ["python3", "-I", "-S", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        time.sleep(interval_s)  # started and waiting on stdin, as in the pool
        began = time.perf_counter()
        answer, _ = proc.communicate(b'{"a": 1, "b": 2}')
        out.append((time.perf_counter() - began) * 1000)
        assert answer == b'{"sum": 3}', answer
    return out


def main(runs: int, interval_s: float) -> None:
    rows = asyncio.run(pooled(runs, interval_s))
    rows["python exit"] = python_exit(ADD, runs, interval_s)
    rows["python os._exit"] = python_exit(
        ADD + "; sys.stdout.flush(); import os; os._exit(0)", runs, interval_s
    )
    print(f"{'part':<20}{'p50 ms':>9}{'p90 ms':>9}   (n={runs}, one call every {interval_s:g} s)")
    for name, samples in rows.items():
        q = statistics.quantiles(samples, n=10, method="inclusive")
        print(f"{name:<20}{statistics.median(samples):9.2f}{q[8]:9.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--interval", type=float, default=0.15)
    args = parser.parse_args()
    main(args.runs, args.interval)
