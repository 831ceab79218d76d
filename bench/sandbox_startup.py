"""Sandbox start-up cost, side by side in one run.

    .venv/bin/python bench/sandbox_startup.py [--runs 50]

Measures the same trivial tool (examples/agents/calculator/add.py, run as
`python3 -I -S add.py` with JSON on stdin) five ways, sequentially, each from a
client in this process:

  bare            the interpreter started directly (subprocess), no sandbox
  bwrap           run_tool() with the bwrap backend (seccomp, rlimits, cgroups)
  nsjail          run_tool() with the nsjail backend
  runner (bwrap)  POST /v1/run to a real runner over its unix socket, with a grant
  gateway (bwrap) POST /v1/invoke through the real gateway, OPA and runner

and prints p50/p90/p99 in ms and each p50 over the bare p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import REPO, running_stack

from regate import crypto
from regate.canonical import digest
from regate.demo import mint_token
from regate.grants import issue_grant
from sandbox_runner import cgroups
from sandbox_runner.limits import Limits
from sandbox_runner.nsjail import find_nsjail
from sandbox_runner.sandbox import Sandbox, run_tool

TOOL_DIR = REPO / "examples" / "agents" / "calculator"
ENTRYPOINT = ["python3", "-I", "-S", "add.py"]
ARGUMENTS = {"a": 2, "b": 40}
LIMITS = {"timeout_s": 5, "memory_mb": 128, "output_kb": 16, "pids": 8}


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), q[89], q[98]


def time_sync(fn: Callable[[], None], runs: int) -> list[float]:
    fn()  # warm caches
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def time_async(fn: Callable[[], Awaitable[None]], runs: int) -> list[float]:
    await fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def bare() -> None:
    done = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "add.py"],
        input=json.dumps(ARGUMENTS).encode(),
        capture_output=True,
        cwd=TOOL_DIR,
        check=True,
    )
    assert json.loads(done.stdout) == {"sum": 42}


def sandboxed(backend: str) -> Callable[[], Awaitable[None]]:
    binary = "nsjail" if backend == "nsjail" else "bwrap"
    sandbox = Sandbox(binary, 65534, 65534, cgroups=cgroups.detect(), backend=backend)
    limits = Limits.from_grant(LIMITS, Limits(60, 1024, 1024, 64))

    async def call() -> None:
        outcome = await run_tool(sandbox, TOOL_DIR, ENTRYPOINT, ARGUMENTS, limits)
        assert outcome.ok, outcome.as_json()
        assert outcome.result == {"sum": 42}

    return call


async def through_stack(runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with running_stack("bwrap") as stack:
        settings = stack.settings
        key = crypto.load_private_key(settings.gateway.grant_key)
        uds = str(settings.runner.url.uds)
        async with httpx.AsyncClient(
            base_url="http://runner", transport=httpx.AsyncHTTPTransport(uds=uds)
        ) as runner:

            async def run_once() -> None:
                grant = issue_grant(
                    decision_id=f"bench-{time.monotonic_ns()}",
                    agent_id="calculator",
                    tool="add",
                    entrypoint=ENTRYPOINT,
                    limits=LIMITS,
                    arguments_sha256=digest(ARGUMENTS),
                    key=key,
                    ttl_s=30,
                )
                response = await runner.post(
                    "/v1/run",
                    json={"arguments": ARGUMENTS},
                    headers={"Authorization": f"Bearer {grant}"},
                )
                assert response.json()["result"] == {"sum": 42}, response.text

            results["runner (bwrap)"] = await time_async(run_once, runs)

        token = mint_token(settings, "demo-client", ttl_s=3600)
        base = f"http://127.0.0.1:{settings.gateway.listen.port}"
        async with httpx.AsyncClient(base_url=base) as gateway:

            async def invoke_once() -> None:
                response = await gateway.post(
                    "/v1/invoke/calculator/add",
                    json={"arguments": ARGUMENTS},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.json()["result"] == {"sum": 42}, response.text

            results["gateway (bwrap)"] = await time_async(invoke_once, runs)
    return results


async def main(runs: int) -> None:
    rows: dict[str, list[float]] = {"bare": time_sync(bare, runs)}
    rows["bwrap"] = await time_async(sandboxed("bwrap"), runs)
    if find_nsjail("nsjail"):
        rows["nsjail"] = await time_async(sandboxed("nsjail"), runs)
    rows.update(await through_stack(runs))

    base = statistics.median(rows["bare"])
    print(f"{'path':<18}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p50/bare':>10}   (n={runs})")
    for name, samples in rows.items():
        p50, p90, p99 = percentiles(samples)
        print(f"{name:<18}{p50:9.2f}{p90:9.2f}{p99:9.2f}{p50 / base:10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
