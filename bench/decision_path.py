"""The decision path under load, with its baselines, side by side in one run.

    .venv/bin/python bench/decision_path.py [--concurrency 8] [--duration 5]

Starts a real stack (OPA, runner, gateway) on loopback and drives it from a
separate process (bench/load.py), one row after another:

  healthz            GET /healthz on the gateway: the HTTP floor of our server
  opa direct         POST /v1/data/regate/authz/decision to OPA with the same input
  decision (deny)    POST /v1/invoke of a call policy denies: token verify, manifest,
                     schema, OPA over loopback, durable audit record, response
  sandboxed (allow)  an allowed call that runs calculator.add in the sandbox

and prints p50/p90/p99 and throughput for each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import running_stack

from regate.demo import mint_token

LOAD = str(Path(__file__).resolve().parent / "load.py")


def load(
    url: str, *, concurrency: int, duration: float, expect: int, **kw: str
) -> dict[str, float]:
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
    result: dict[str, float] = json.loads(out.stdout)
    return result


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


def main(concurrency: int, duration: float) -> None:
    rows: dict[str, dict[str, float]] = {}
    common = {"concurrency": concurrency, "duration": duration}
    with running_stack("bwrap") as settings:
        gateway = f"http://127.0.0.1:{settings.gateway.listen.port}"
        opa = settings.opa.url.base_url
        token = mint_token(settings, "demo-client", ttl_s=3600)
        auth = f"Authorization: Bearer {token}"
        rows["healthz"] = load(f"{gateway}/healthz", expect=200, **common)  # type: ignore[arg-type]
        rows["opa direct"] = load(
            f"{opa}/v1/data/regate/authz/decision", method="POST", body=opa_input("demo-client"),
            expect=200, **common,  # type: ignore[arg-type]
        )  # fmt: skip
        rows["decision (deny)"] = load(
            f"{gateway}/v1/invoke/ops/shell", method="POST", body='{"arguments": {"command": "id"}}',
            headers=auth, expect=403, **common,  # type: ignore[arg-type]
        )  # fmt: skip
        rows["sandboxed (allow)"] = load(
            f"{gateway}/v1/invoke/calculator/add", method="POST", body='{"arguments": {"a": 1, "b": 2}}',
            headers=auth, expect=200, **common,  # type: ignore[arg-type]
        )  # fmt: skip
    print(
        f"{'path':<20}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>9}{'errors':>8}   (c={concurrency}, {duration:g} s)"
    )
    for name, r in rows.items():
        print(
            f"{name:<20}{r['p50_ms']:9.2f}{r['p90_ms']:9.2f}{r['p99_ms']:9.2f}{r['rps']:9.0f}{r['errors']:8.0f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    main(args.concurrency, args.duration)
