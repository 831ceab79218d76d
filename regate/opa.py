"""Finding the pinned OPA binary and the command line that runs it as a sidecar."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from regate.settings import Address

PINNED_VERSION = "v1.22.2"  # keep equal to scripts/opa-version (a test checks)
REPO_ROOT = Path(__file__).resolve().parents[1]


class OpaNotFound(Exception):
    pass


def find_opa() -> str:
    """$REGATE_OPA, else the repo's .tools/bin/opa, else `opa` on PATH at the pinned version."""
    candidates = [os.environ.get("REGATE_OPA"), str(REPO_ROOT / ".tools" / "bin" / "opa")]
    candidates.append(shutil.which("opa"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and opa_version(candidate) == PINNED_VERSION:
            return candidate
    raise OpaNotFound(
        f"OPA {PINNED_VERSION} was not found. Run 'make setup' (it builds it into .tools/bin"
        f" with 'go install github.com/open-policy-agent/opa@{PINNED_VERSION}'), or install"
        f" that release on PATH, or point REGATE_OPA at it."
    )


def opa_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return ""
    for line in out.splitlines():
        if line.startswith("Version:"):
            return "v" + line.split(":", 1)[1].strip().removeprefix("v")
    return ""


def sidecar_argv(binary: str, listen: Address, policies_dir: Path) -> list[str]:
    addr = f"unix://{listen.uds}" if listen.uds else listen.host_port
    return [
        binary,
        "run",
        "--server",
        "--addr", addr,
        "--bundle", str(policies_dir),
        "--watch",  # policy edits reload without a restart
        "--log-level", "error",
        "--log-format", "json",
        "--skip-version-check",  # never call out of this machine
    ]  # fmt: skip


def sidecar_env(gogc: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The sidecar's environment: ours, with GOGC set unless the operator set it."""
    return {"GOGC": str(gogc), **environ}
