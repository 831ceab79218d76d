"""Where the gateway's time goes on the decision path: py-spy against the real stack.

    .venv/bin/python bench/profile_decision.py [--duration 10] [--concurrency 8] [--top 25]

Starts a real stack (OPA, runner, gateway), drives denied calls at it from a
separate process (bench/load.py), samples the gateway process with py-spy
(`pip install py-spy`; it needs ptrace, so run as root or with CAP_SYS_PTRACE),
and prints the functions with the most samples: by self time (the frame on top)
and by total time (anywhere on the stack). The raw collapsed stacks are kept in
--out for flame graphs (e.g. speedscope, inferno).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decision_path import DENIED_CALL, LOAD
from stack import running_stack

from regate.demo import mint_token


def frame_name(frame: str) -> str:
    # py-spy's raw format: "function (path/to/file.py:line)"; drop the line, shorten the path.
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "wt-perf/", "main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


# Where a decision's time goes, by the function that owns each part (total %).
PARTS = [
    ("whole request (ASGI app)", "RequestResponseCycle.run_asgi "),
    ("pipeline", "Pipeline.invoke "),
    ("token verification", "TokenVerifier.authenticate "),
    ("schema validation", "validate_arguments "),
    ("OPA request (aiohttp)", "PolicyClient.decide "),
    ("audit append (await + its log line)", "AuditStore.append "),
    ("audit writer thread", "AuditStore._write_loop "),
    ("canonical JSON (RFC 8785)", "canonical_json "),
    ("logging (structlog)", "BoundLoggerBase._proxy_to_logger "),
    ("HTTP parsing (h11)", "H11Protocol.data_received "),
]


def summarize(collapsed: Path, top: int) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    total_time: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("<module>")]
        if not frames:
            continue
        samples += count
        self_time[frames[-1]] += count
        for name in set(frames):
            total_time[name] += count
    lines = [f"{samples} samples of the gateway", "", "total %  part"]
    for label, prefix in PARTS:
        share = sum(n for name, n in total_time.items() if name.startswith(prefix))
        lines.append(f"{100 * share / samples:6.1f}   {label}")
    lines += ["", "self %   function"]
    lines += [f"{100 * n / samples:6.1f}   {name}" for name, n in self_time.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:6.1f}   {name}" for name, n in total_time.most_common(top)]
    return "\n".join(lines)


def main(duration: float, concurrency: int, top: int, out: Path, gil: bool) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    with running_stack("bwrap") as stack:
        settings, gateway_pid = stack.settings, stack.pids["gateway"]
        token = mint_token(settings, "demo-client", ttl_s=3600)
        url = f"http://127.0.0.1:{settings.gateway.listen.port}/v1/invoke/ops/shell"
        load_argv = [sys.executable, LOAD, "--url", url, "--method", "POST", "--expect", "403"]
        load_argv += ["--body", DENIED_CALL, "--header", f"Authorization: Bearer {token}"]
        load_argv += ["--concurrency", str(concurrency), "--duration", str(duration + 1)]
        load = subprocess.Popen(
            load_argv,
            stdout=subprocess.PIPE,
        )
        try:
            subprocess.run(
                [py_spy, "record", "--pid", str(gateway_pid), "--duration", str(int(duration))]
                + ["--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"]
                + (["--gil"] if gil else []),
                check=True,
                capture_output=True,
                timeout=duration + 60,
            )
        finally:
            stdout, _ = load.communicate(timeout=duration + 60)
    print(f"load: {stdout.decode().strip()}")
    print(summarize(out, top))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("/tmp/regate-decision.collapsed"))
    parser.add_argument(
        "--gil", action="store_true", help="only samples holding the GIL: Python CPU time"
    )
    args = parser.parse_args()
    main(args.duration, args.concurrency, args.top, args.out, args.gil)
