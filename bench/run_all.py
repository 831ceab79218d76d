"""Every benchmark, one after another, with the machine they ran on: `make bench`.

    .venv/bin/python bench/run_all.py [--full]

Prints, in one run, each table with its baselines measured beside it (so the
figures are ratios that survive a noisy machine):

  1. sandboxed calls     bench/sandbox_startup.py: bare interpreter start, bwrap,
                         nsjail, runner, gateway, and the same with the sandbox pool;
                         bench/pooled_call.py: where a pooled call's time goes
  2. decision path       bench/decision_path.py: hello endpoint on the same server
                         stack, OPA queried directly, denied calls (OPA over TCP and
                         over a unix socket), with CPU per request;
                         bench/opa_clients.py: the hop to OPA with each HTTP client
  3. growth              bench/growth.py: grants in policy data, the audit log at
                         N records, memory over a soak

The default run is bounded (about five minutes on 2 cores: a 250,000-record audit
store, a 60 s soak); --full uses the issue's sizes (10^6 records, a 10-minute soak).
The load average is printed before and after: other work on the machine moves the
absolute numbers, much less the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    opa = subprocess.run(
        [sys.executable, "-c", "from regate.opa import find_opa, opa_version as v; print(v(find_opa()))"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Linux {platform.release()},"
        f" Python {platform.python_version()}, OPA {opa or '?'}"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(title: str, script: str, *args: str) -> None:
    command = ["bench/" + script, *args]
    print(f"\n## {title}\n$ .venv/bin/python {' '.join(command)}", flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, str(BENCH / script), *args], check=True)
    print(f"({time.monotonic() - started:.0f} s, load average now {load_average()})", flush=True)


def main(full: bool) -> None:
    print(f"machine: {machine()}")
    print(f"load average (1, 5, 15 min) at start: {load_average()}")
    run("Sandboxed calls", "sandbox_startup.py", "--runs", "40")
    run("A pooled call, in-process", "pooled_call.py", "--runs", "25")
    run(
        "Decision path",
        "decision_path.py",
        "--concurrency",
        "8",
        "--duration",
        "4",
        "--repeat",
        "3",
    )
    run("The hop to OPA, by HTTP client", "opa_clients.py", "--requests", "2000")
    records = "1000000" if full else "250000"
    soak = "600" if full else "60"
    run(
        "Growth",
        "growth.py",
        "--grants", "10,1000,100000", "--duration", "4",
        "--audit-records", records, "--soak-seconds", soak,
    )  # fmt: skip
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="10^6 audit records, 10 min soak")
    main(parser.parse_args().full)
