"""`regate policy test`: the check chain a policy change must pass.

format → type check (against the input schema) → tests → coverage (every line
of every non-test file) → Regal lint, when Regal is installed. It stops at
the first failure. Regal comes after the tests so that a failing test is
what a broken change reports first; it is optional because it is a separate
Go tool that the setup does not install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from regate.opa import REPO_ROOT, OpaNotFound, find_opa

Step = tuple[str, list[str]]


def run_policy_checks(policies: Path) -> int:
    try:
        opa = find_opa()
    except OpaNotFound as exc:
        print(f"regate policy test: {exc}", file=sys.stderr)
        return 2
    schema = str(policies / "schema")
    steps: list[Step] = [
        ("format", [opa, "fmt", "--list", "--fail", str(policies)]),
        ("type check", [opa, "check", "--strict", "--schema", schema, str(policies)]),
        ("tests", [opa, "test", "--fail-on-empty", str(policies)]),
    ]
    for name, argv in steps:
        result = _run(argv)
        if result.returncode != 0:
            _fail(name, argv, result.stdout + result.stderr)
            if name == "format":
                print(f"fix with: {opa} fmt -w {policies}")
            return 1
        print(f"ok   {name}" + (_last_line(result.stdout) if name == "tests" else ""))
    return _check_coverage(opa, policies) or _lint(policies)


def _check_coverage(opa: str, policies: Path) -> int:
    """Every line of the policy (not of its tests) must run under some test."""
    argv = [opa, "test", "--coverage", "--format", "json", str(policies)]
    result = _run(argv)
    try:
        report = json.loads(result.stdout)
        total = float(report["coverage"])
        files = dict(report["files"])
    except (ValueError, KeyError, TypeError):
        _fail("coverage", argv, result.stdout + result.stderr)
        return 1
    gaps = [
        f"  {path}: lines {_rows(entry.get('not_covered', []))} not covered"
        for path, entry in sorted(files.items())
        if not path.endswith("_test.rego") and entry.get("not_covered")
    ]
    if gaps:
        print(f"FAIL coverage: {' '.join(argv)}")
        print("\n".join(gaps))
        print("add test cases that reach these lines (opa test -v shows what runs)")
        return 1
    print(f"ok   coverage ({total:.1f}%)")
    return 0


def _lint(policies: Path) -> int:
    regal = find_regal()
    if regal is None:
        print("skip lint: regal not found (on PATH or at .tools/bin/regal)")
        return 0
    argv = [regal, "lint"]
    config = policies / ".regal" / "config.yaml"
    if config.is_file():
        argv += ["--config-file", str(config)]
    argv.append(str(policies))
    result = _run(argv)
    if result.returncode != 0:
        _fail("lint", argv, result.stdout + result.stderr)
        return 1
    print("ok   lint")
    return 0


def find_regal() -> str | None:
    """The repo's .tools/bin/regal, else `regal` on PATH, else None."""
    local = REPO_ROOT / ".tools" / "bin" / "regal"
    if local.is_file():
        return str(local)
    return shutil.which("regal")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _fail(name: str, argv: list[str], output: str) -> None:
    print(f"FAIL {name}: {' '.join(argv)}")
    print(output.strip())


def _last_line(output: str) -> str:
    lines = output.strip().splitlines()
    return f" ({lines[-1].strip()})" if lines else ""


def _rows(ranges: list[dict[str, dict[str, int]]]) -> str:
    spans = []
    for span in ranges:
        start, end = span["start"]["row"], span["end"]["row"]
        spans.append(str(start) if start == end else f"{start}-{end}")
    return ", ".join(spans)
