"""`regate policy test`: the check chain a policy change must pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from regate.opa import OpaNotFound, find_opa


def run_policy_checks(policies: Path) -> int:
    try:
        opa = find_opa()
    except OpaNotFound as exc:
        print(f"regate policy test: {exc}", file=sys.stderr)
        return 2
    schema = str(policies / "schema")
    steps = [
        ("format", [opa, "fmt", "--list", "--fail", str(policies)]),
        ("type check", [opa, "check", "--strict", "--schema", schema, str(policies)]),
        (
            "tests",
            [opa, "test", "--fail-on-empty", "--coverage", "--format", "json", str(policies)],
        ),
    ]
    for name, argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            print(f"FAIL {name}: {' '.join(argv)}")
            print((result.stdout + result.stderr).strip())
            if name == "format":
                print(f"fix with: {opa} fmt -w {policies}")
            return 1
        print(f"ok   {name}" + (_coverage(result.stdout) if name == "tests" else ""))
    return 0


def _coverage(report: str) -> str:
    import json

    try:
        return f" (coverage {json.loads(report)['coverage']:.1f}%)"
    except (ValueError, KeyError, TypeError):
        return ""
