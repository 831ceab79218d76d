"""The decision path under load, with its baselines, side by side in one run.

    .venv/bin/python bench/decision_path.py [--concurrency 8] [--duration 5]

Starts a real stack (OPA, runner, gateway) on loopback and drives it from a
separate process (bench/load.py), one row after another:

  hello (healthz)     GET /healthz on the gateway: the floor of our server stack
  opa direct          POST /v1/data/regate/authz/decision to OPA with the same input
  decision (deny)     POST /v1/invoke of a call policy denies: token verify, manifest,
                      schema, OPA over loopback TCP, durable audit record, response
  decision, one client  the same, one request at a time: a decision's own latency
  decision, opa unix  the same at c=8 with the gateway reaching OPA over a unix socket
                      (a second stack, `[opa] url = "unix:..."`)

and prints p50/p90/p99, throughput, each p50 over the hello p50, and the CPU each
process spent per request (from /proc: robust on a shared machine, where
latencies move with the neighbours' load). bench/sandbox_startup.py measures the
sandboxed (allowed) calls.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import RunningStack, running_stack

from regate.demo import mint_token

LOAD = str(Path(__file__).resolve().parent / "load.py")
TICKS = os.sysconf("SC_CLK_TCK")
DENIED_CALL = '{"arguments": {"command": "id"}}'


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def load(url: str, *, concurrency: int, duration: float, expect: int, **kw: str) -> dict[str, Any]:
    argv = [sys.executable, LOAD, "--url", url, "--concurrency", str(concurrency)]
    argv += ["--duration", str(duration), "--expect", str(expect)]
    if "method" in kw:
        argv += ["--method", kw["method"]]
    if "body" in kw:
        argv += ["--body", kw["body"]]
    for header in kw.get("headers", "").split("\n"):
        if header:
            argv += ["--header", header]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 60)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@contextmanager
def cpu_per_request(stack: RunningStack, row: dict[str, Any]) -> Iterator[None]:
    """Add `<service>_cpu_ms`: CPU ms per request, over the whole load run (warm-up too)."""
    before = {name: cpu_seconds(pid) for name, pid in stack.pids.items()}
    yield
    total = row["count"] + row.get("warmup_count", 0)
    for name, pid in stack.pids.items():
        row[f"{name}_cpu_ms"] = (cpu_seconds(pid) - before[name]) * 1000 / max(total, 1)


def opa_input(token_sub: str) -> str:
    return json.dumps(
        {
            "input": {
                "input_version": 1,
                "caller": {"sub": token_sub, "iss": "https://issuer.bench.regate", "claims": {}, "act": None},
                "target": {"agent_id": "ops", "version": "1.0.0", "manifest_sha256": "0" * 64, "publisher": "publisher"},
                "tool": {"name": "shell", "permissions": ["net:none"], "limits": {"timeout_s": 5, "memory_mb": 128, "output_kb": 16, "pids": 8}},
                "arguments": {"command": "id"},
                "request": {"id": "r", "time": "2026-11-22T12:00:00Z", "source_ip": "127.0.0.1", "source_ip_from": "peer", "method": "POST", "path": "/v1/invoke/ops/shell"},
                "usage": {"calls_last_minute": 0},
            }
        }
    )  # fmt: skip


def denied_calls(stack: RunningStack, concurrency: int, duration: float) -> dict[str, Any]:
    token = mint_token(stack.settings, "demo-client", ttl_s=3600)
    row: dict[str, Any] = {}
    with cpu_per_request(stack, row):
        row.update(
            load(
                f"{stack.gateway_url}/v1/invoke/ops/shell", method="POST", body=DENIED_CALL,
                headers=f"Authorization: Bearer {token}", expect=403,
                concurrency=concurrency, duration=duration,
            )
        )  # fmt: skip
    return row


def measure(
    concurrency: int, duration: float, unix: bool = True, repeat: int = 1
) -> dict[str, dict[str, Any]]:
    """Each row `repeat` times, the rows interleaved (a round is every row once, so the
    baselines share each round's conditions); each figure is the median over rounds."""
    runs: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    common: dict[str, Any] = {"concurrency": concurrency, "duration": duration}
    with running_stack("bwrap") as stack:
        opa = stack.settings.opa.url.base_url
        for _ in range(repeat):
            runs["hello (healthz)"].append(row := {})
            with cpu_per_request(stack, row):
                row.update(load(f"{stack.gateway_url}/healthz", expect=200, **common))
            runs["opa direct"].append(row := {})
            with cpu_per_request(stack, row):
                row.update(
                    load(
                        f"{opa}/v1/data/regate/authz/decision", method="POST",
                        body=opa_input("demo-client"), expect=200, **common,
                    )
                )  # fmt: skip
            runs["decision (deny)"].append(denied_calls(stack, concurrency, duration))
            runs["decision, one client"].append(denied_calls(stack, 1, duration))
    if unix:
        with running_stack("bwrap", opa_unix=True) as stack:
            for _ in range(repeat):
                runs["decision, opa unix"].append(denied_calls(stack, concurrency, duration))
    return {name: median_row(samples) for name, samples in runs.items()}


def median_row(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: statistics.median(sample[key] for sample in samples)
        for key, value in samples[0].items()
        if isinstance(value, int | float)
    }


def table(rows: dict[str, dict[str, Any]], concurrency: int, duration: float) -> str:
    hello = rows["hello (healthz)"]["p50_ms"]
    head = (
        f"{'path':<21}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'req/s':>7}{'err':>5}"
        f"{'p50/hello':>10}{'gw cpu ms':>10}{'opa cpu ms':>11}   (c={concurrency}, {duration:g} s)"
    )
    lines = [head]
    for name, r in rows.items():
        lines.append(
            f"{name:<21}{r['p50_ms']:8.2f}{r['p90_ms']:8.2f}{r['p99_ms']:8.2f}{r['rps']:7.0f}"
            f"{r['errors']:5.0f}{r['p50_ms'] / hello:10.2f}"
            f"{r['gateway_cpu_ms']:10.3f}{r['opa_cpu_ms']:11.3f}"
        )
    return "\n".join(lines)


def main(concurrency: int, duration: float, unix: bool, repeat: int) -> None:
    rows = measure(concurrency, duration, unix, repeat)
    print(table(rows, concurrency, duration))
    if repeat > 1:
        print(f"(each figure the median of {repeat} runs, rows interleaved)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--no-unix", action="store_true", help="skip the OPA-over-unix row")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row; medians printed")
    args = parser.parse_args()
    main(args.concurrency, args.duration, not args.no_unix, args.repeat)
