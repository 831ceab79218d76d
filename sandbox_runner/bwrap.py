"""The bubblewrap command line for one tool call (the default backend).

The tool sees: a read-only /usr (and the usual /bin, /lib symlinks), its own
directory read-only at /tool, a size-capped tmpfs at /tmp, a private /proc and
/dev, a read-only root, no network (only `lo`), an environment of PATH/HOME/LANG,
a new session, no capabilities, and the seccomp filter (passed as an fd).
`--info-fd` tells the runner the pid of the sandbox's init, whose death ends the
whole pid namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sandbox_runner.limits import TMPFS_MB

SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}  # noqa: S108


def bwrap_argv(
    bwrap: str, tool_dir: Path, entrypoint: Sequence[str], *, seccomp_fd: int, info_fd: int
) -> list[str]:
    argv = [
        bwrap,
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup namespaces: no network
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the runner's terminal
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--symlink",
        "usr/lib",
        "/lib",
    ]
    if Path("/lib64").exists():
        argv += ["--symlink", "usr/lib64", "/lib64"]
    argv += [
        "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(TMPFS_MB * 1024 * 1024), "--tmpfs", "/tmp",  # noqa: S108 - the sandbox's own
        "--ro-bind", str(tool_dir), "/tool",
        "--remount-ro", "/",  # the sandbox's root tmpfs: only /tmp stays writable
        "--chdir", "/tool",
        "--clearenv",
    ]  # fmt: skip
    for name, value in SANDBOX_ENV.items():
        argv += ["--setenv", name, value]
    argv += ["--seccomp", str(seccomp_fd), "--info-fd", str(info_fd), "--", *entrypoint]
    return argv
