"""Sandbox start-up cost, side by side in one run.

    .venv/bin/python bench/sandbox_startup.py [--runs 50] [--pool-size 2] [--interval 0.1]

Measures the same trivial tool (examples/agents/calculator/add.py, run as
`python3 -I -S add.py` with JSON on stdin) five ways, sequentially, each from a
client in this process:

  bare            the interpreter started directly (subprocess), no sandbox
  bwrap           run_tool() with the bwrap backend (seccomp, rlimits, cgroups)
  nsjail          run_tool() with the nsjail backend
  runner (bwrap)  POST /v1/run to a real runner over its unix socket, with a grant
                  (signed beforehand) through the gateway's own runner client
  gateway (bwrap) POST /v1/invoke through the real gateway, OPA and runner
  runner (pool N), gateway (pool N)
                  the same against a stack whose runner keeps N pre-started
                  sandboxes per tool (`[runner] pool_size`), one call every
                  --interval seconds (so the pool refills between calls)

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

import aiohttp

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


async def time_async(
    fn: Callable[[], Awaitable[object]], runs: int, interval_s: float = 0.0
) -> list[float]:
    await fn()
    out = []
    for _ in range(runs):
        await asyncio.sleep(interval_s)  # paced calls: the pool refills in between
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


async def through_stack(runs: int, pool_size: int, interval_s: float) -> dict[str, list[float]]:
    """The runner alone (a grant of ours) and the whole gateway path, on one stack."""
    mode = f"pool {pool_size}" if pool_size else "bwrap"
    results: dict[str, list[float]] = {}
    pooled: list[bool] = []
    with running_stack("bwrap", pool_size=pool_size) as stack:
        settings = stack.settings
        key = crypto.load_private_key(settings.gateway.grant_key)
        uds = str(settings.runner.url.uds)
        # aiohttp, as the gateway's own hop (httpx's default client alone spends ~1 ms of
        # CPU per request here: bench/opa_clients.py), and grants signed before the
        # clock starts: the row is what the runner costs.
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=uds)) as runner:
            unused = iter(
                [
                    issue_grant(
                        decision_id=f"bench-{n}-{time.monotonic_ns()}",
                        agent_id="calculator",
                        tool="add",
                        entrypoint=ENTRYPOINT,
                        limits=LIMITS,
                        arguments_sha256=digest(ARGUMENTS),
                        key=key,
                        ttl_s=120,
                    )
                    for n in range(runs + 1)  # all signed now, none inside a timed call
                ]
            )

            async def run_once() -> None:
                url = "http://runner/v1/run"
                pooled.append(await add_call(runner, url, next(unused)))

            results[f"runner ({mode})"] = await time_async(run_once, runs, interval_s)

        token = mint_token(settings, "demo-client", ttl_s=3600)
        async with aiohttp.ClientSession() as gateway:

            async def invoke_once() -> None:
                url = f"{stack.gateway_url}/v1/invoke/calculator/add"
                pooled.append(await add_call(gateway, url, token))

            results[f"gateway ({mode})"] = await time_async(invoke_once, runs, interval_s)
    if pool_size:
        POOLED_SHARE[mode] = sum(pooled) / len(pooled)
    return results


async def add_call(session: aiohttp.ClientSession, url: str, bearer: str) -> bool:
    """One calculator.add through the runner or the gateway; whether it was pooled."""
    async with session.post(
        url, json={"arguments": ARGUMENTS}, headers={"Authorization": f"Bearer {bearer}"}
    ) as response:
        body = await response.json()
    assert body["result"] == {"sum": 42}, body
    return bool(body["metrics"].get("pooled"))


POOLED_SHARE: dict[str, float] = {}


async def main(runs: int, pool_size: int, interval_s: float) -> None:
    rows: dict[str, list[float]] = {"bare": time_sync(bare, runs)}
    rows["bwrap"] = await time_async(sandboxed("bwrap"), runs)
    if find_nsjail("nsjail"):
        rows["nsjail"] = await time_async(sandboxed("nsjail"), runs)
    rows.update(await through_stack(runs, 0, 0.0))
    if pool_size:
        rows.update(await through_stack(runs, pool_size, interval_s))

    base = statistics.median(rows["bare"])
    print(f"{'path':<20}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p50/bare':>10}   (n={runs})")
    for name, samples in rows.items():
        p50, p90, p99 = percentiles(samples)
        print(f"{name:<20}{p50:9.2f}{p90:9.2f}{p99:9.2f}{p50 / base:10.2f}")
    for mode, share in POOLED_SHARE.items():
        print(
            f"({mode}: {share:.0%} of the calls took a pre-started sandbox;"
            f" one call every {interval_s * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--pool-size", type=int, default=2, help="0: no pooled rows")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between pooled calls")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.pool_size, args.interval))
