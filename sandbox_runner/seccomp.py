"""The syscall filter every tool runs under, built with libseccomp (via pyseccomp).

Default allow, with the dangerous families refused with EPERM: debugging other
processes, mounting, loading kernels or modules, eBPF, perf, the kernel keyring,
userfaultfd, io_uring, new namespaces (above all user namespaces), terminal
injection ioctls, and every socket family but AF_UNIX. Syscalls of any other
architecture (i386 `int 0x80`, x32) kill the process: libseccomp checks the
architecture of every call against the filter's own.
"""

from __future__ import annotations

import errno
import os
import tempfile
from functools import lru_cache

import pyseccomp as seccomp

DENIED = (
    # other processes' memory and control
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # mounts and filesystems
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "quotactl", "swapon", "swapoff",
    # the kernel itself
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "bpf", "perf_event_open", "syslog", "acct", "lookup_dcookie",
    "iopl", "ioperm", "uselib", "vhangup", "nfsservctl",
    # keyring, userfaultfd, io_uring
    "keyctl", "add_key", "request_key", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # namespaces and clocks
    "unshare", "setns", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
)  # fmt: skip

CLONE_NEW_FLAGS = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
AF_UNIX = 1


def build_filter() -> seccomp.SyscallFilter:
    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    # A call from a foreign architecture never matches our rules: kill it.
    rules.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    for name in DENIED:
        try:
            rules.add_rule(deny, name)
        except (OSError, ValueError):
            continue  # not a syscall on this architecture or libseccomp version
    for flag in CLONE_NEW_FLAGS:
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 takes its flags in a struct a filter cannot read: make libc fall back
    # to clone, whose flags are checked above.
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for request in (TIOCSTI, TIOCLINUX):
        # Compare only the low 32 bits: the kernel ignores the rest (CVE-2017-5226 class).
        rules.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    rules.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.NE, AF_UNIX))
    rules.add_rule(
        seccomp.ERRNO(errno.EAFNOSUPPORT), "socketpair", seccomp.Arg(0, seccomp.NE, AF_UNIX)
    )
    return rules


@lru_cache(maxsize=1)
def filter_bpf() -> bytes:
    """The compiled BPF program, as bwrap's `--seccomp FD` reads it."""
    with tempfile.TemporaryFile() as fh:
        build_filter().export_bpf(fh)
        fh.seek(0)
        return fh.read()


def filter_fd() -> int:
    """A readable fd holding the filter, for one bwrap start (the caller closes it)."""
    program = filter_bpf()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, program)  # far below the pipe's capacity
    finally:
        os.close(write_end)
    return read_end


def kafel_policy() -> str:
    """The same rules in nsjail's kafel language (syscalls by number, so both
    backends deny exactly the same calls whatever names kafel knows)."""
    arch = seccomp.system_arch()
    numbers = sorted(
        {n for n in (seccomp.resolve_syscall(arch, name) for name in DENIED) if n >= 0}
    )
    deny = [f"SYSCALL[{n}]" for n in numbers]
    any_new = 0
    for flag in CLONE_NEW_FLAGS:
        any_new |= flag
    deny.append(f"clone(flags) {{ (flags & {any_new:#x}) != 0 }}")
    requests = " || ".join(f"(cmd & 0xffffffff) == {r:#x}" for r in (TIOCSTI, TIOCLINUX))
    deny.append(f"ioctl(fd, cmd) {{ {requests} }}")
    return (
        "POLICY regate {\n"
        f"  ERRNO({errno.EPERM}) {{ {', '.join(deny)} }},\n"
        f"  ERRNO({errno.EAFNOSUPPORT}) {{ socket(domain) {{ domain != {AF_UNIX} }},"
        f" socketpair(domain) {{ domain != {AF_UNIX} }} }},\n"
        f"  ERRNO({errno.ENOSYS}) {{ clone3 }}\n"
        "}\nUSE regate DEFAULT ALLOW"
    )
