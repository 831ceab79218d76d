"""The bubblewrap command line for one tool call (`sandbox_runner.bwrap`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from sandbox_runner.bwrap import SANDBOX_ENV, bwrap_argv
from sandbox_runner.limits import TMPFS_MB

BWRAP = "/usr/bin/bwrap"
TOOL_DIR = Path("/var/lib/regate/tools/calc")
SECCOMP_FD = 11
INFO_FD = 12


def argv_for(entrypoint: Sequence[str] = ("python3", "add.py")) -> list[str]:
    return bwrap_argv(BWRAP, TOOL_DIR, entrypoint, seccomp_fd=SECCOMP_FD, info_fd=INFO_FD)


def options(argv: list[str]) -> list[str]:
    return argv[: argv.index("--")]


def groups(argv: list[str], flag: str, size: int) -> list[list[str]]:
    """The `size` arguments following each occurrence of `flag`."""
    opts = options(argv)
    return [opts[i + 1 : i + 1 + size] for i, arg in enumerate(opts) if arg == flag]


def test_binary_comes_first() -> None:
    assert argv_for()[0] == BWRAP


@pytest.mark.parametrize(
    "flag", ["--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
)
def test_isolation_flags_are_present_once(flag: str) -> None:
    assert options(argv_for()).count(flag) == 1


def test_all_capabilities_are_dropped() -> None:
    assert groups(argv_for(), "--cap-drop", 1) == [["ALL"]]
    assert "--cap-add" not in argv_for()


def test_network_is_not_shared_and_nothing_is_bound_writable() -> None:
    opts = options(argv_for())
    for flag in ("--share-net", "--bind", "--bind-try", "--dev-bind", "--unshare-user-try"):
        assert flag not in opts


def test_tool_dir_is_bound_read_only_at_tool() -> None:
    argv = argv_for()
    assert [str(TOOL_DIR), "/tool"] in groups(argv, "--ro-bind", 2)
    assert groups(argv, "--chdir", 1) == [["/tool"]]


def test_usr_is_bound_read_only() -> None:
    assert ["/usr", "/usr"] in groups(argv_for(), "--ro-bind", 2)


def test_tmp_is_a_size_capped_tmpfs() -> None:
    opts = options(argv_for())
    i = opts.index("--tmpfs")
    assert opts[i - 2 : i + 2] == ["--size", str(TMPFS_MB * 1024 * 1024), "--tmpfs", "/tmp"]
    assert opts[i - 1] == "16777216"
    assert opts.count("--tmpfs") == 1


def test_root_is_remounted_read_only_after_the_mounts() -> None:
    opts = options(argv_for())
    assert groups(argv_for(), "--remount-ro", 1) == [["/"]]
    remount = opts.index("--remount-ro")
    assert remount > opts.index("--tmpfs")
    assert remount > max(i for i, a in enumerate(opts) if a == "--ro-bind")


def test_private_proc_and_dev() -> None:
    argv = argv_for()
    assert groups(argv, "--proc", 1) == [["/proc"]]
    assert groups(argv, "--dev", 1) == [["/dev"]]


def test_environment_is_exactly_the_sandbox_env() -> None:
    argv = argv_for()
    opts = options(argv)
    setenv = groups(argv, "--setenv", 2)
    assert setenv == [[k, v] for k, v in SANDBOX_ENV.items()]
    assert dict((k, v) for k, v in setenv) == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
    }
    assert opts.index("--clearenv") < opts.index("--setenv")
    assert "--unsetenv" not in opts


def test_seccomp_and_info_fds_are_passed() -> None:
    argv = argv_for()
    assert groups(argv, "--seccomp", 1) == [[str(SECCOMP_FD)]]
    assert groups(argv, "--info-fd", 1) == [[str(INFO_FD)]]


def test_hostname_is_fixed() -> None:
    assert groups(argv_for(), "--hostname", 1) == [["sandbox"]]


@pytest.mark.parametrize(
    "entrypoint",
    [
        pytest.param(("python3", "add.py"), id="interpreter-not-resolved"),
        pytest.param(("python3", "-I", "add.py", "--", "--seccomp", "0"), id="args-verbatim"),
        pytest.param(("/usr/bin/env", "python3"), id="absolute"),
    ],
)
def test_entrypoint_comes_last_after_double_dash(entrypoint: tuple[str, ...]) -> None:
    argv = argv_for(entrypoint)
    assert argv[argv.index("--") + 1 :] == list(entrypoint)
