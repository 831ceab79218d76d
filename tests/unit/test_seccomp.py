"""The syscall filter (`sandbox_runner.seccomp`): the BPF program bwrap reads and the
kafel policy nsjail compiles, from the same rule list."""

from __future__ import annotations

import errno
import os
import re

import pyseccomp
import pytest

from sandbox_runner import seccomp

PIPE_CAPACITY = 64 * 1024
SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
CLONE_THREAD = 0x00010000
CLONE_VM = 0x00000100


def expected_numbers() -> list[int]:
    arch = pyseccomp.system_arch()
    numbers = {pyseccomp.resolve_syscall(arch, name) for name in seccomp.DENIED}
    return sorted(n for n in numbers if n >= 0)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


# --- BPF ---------------------------------------------------------------------------


def test_filter_bpf_is_a_whole_bpf_program_that_fits_a_pipe() -> None:
    program = seccomp.filter_bpf()
    assert isinstance(program, bytes)
    assert len(program) > 0
    assert len(program) % SOCK_FILTER_SIZE == 0
    assert len(program) < PIPE_CAPACITY
    # One instruction per denied call at least, plus the arch check and the default.
    assert len(program) // SOCK_FILTER_SIZE > len(expected_numbers())


def test_filter_bpf_is_stable() -> None:
    assert seccomp.filter_bpf() == seccomp.filter_bpf()


def test_filter_fd_yields_exactly_the_program() -> None:
    fd = seccomp.filter_fd()
    try:
        assert read_all(fd) == seccomp.filter_bpf()
    finally:
        os.close(fd)


def test_filter_fd_is_the_read_end_only() -> None:
    fd = seccomp.filter_fd()
    try:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.write(fd, b"x")
    finally:
        os.close(fd)


def test_each_filter_fd_is_a_fresh_pipe() -> None:
    first, second = seccomp.filter_fd(), seccomp.filter_fd()
    try:
        assert first != second
        assert read_all(first) == read_all(second) == seccomp.filter_bpf()
    finally:
        os.close(first)
        os.close(second)


# --- kafel --------------------------------------------------------------------------


def test_kafel_policy_frame() -> None:
    policy = seccomp.kafel_policy()
    assert policy.startswith("POLICY regate {\n")
    assert policy.endswith("}\nUSE regate DEFAULT ALLOW")
    assert policy.count("USE regate DEFAULT ALLOW") == 1


def test_kafel_denies_each_resolvable_syscall_once() -> None:
    policy = seccomp.kafel_policy()
    listed = [int(n) for n in re.findall(r"SYSCALL\[(-?\d+)\]", policy)]
    assert listed == expected_numbers()
    assert len(listed) == len(set(listed))
    assert all(n >= 0 for n in listed)


@pytest.mark.parametrize("name", ["ptrace", "mount", "bpf", "unshare", "setns", "keyctl", "io_uring_setup", "init_module"])  # fmt: skip
def test_kafel_denies_the_core_syscalls(name: str) -> None:
    number = pyseccomp.resolve_syscall(pyseccomp.system_arch(), name)
    assert number >= 0
    assert f"SYSCALL[{number}]" in seccomp.kafel_policy()


def test_kafel_denies_them_with_eperm() -> None:
    policy = seccomp.kafel_policy()
    line = next(line for line in policy.splitlines() if "SYSCALL[" in line)
    assert line.strip().startswith(f"ERRNO({errno.EPERM}) {{ SYSCALL[")


def clone_mask(policy: str) -> int:
    found = re.search(r"clone\(flags\) \{ \(flags & (0x[0-9a-f]+)\) != 0 \}", policy)
    assert found is not None, policy
    return int(found.group(1), 16)


def test_kafel_clone_mask_covers_every_new_namespace_flag() -> None:
    mask = clone_mask(seccomp.kafel_policy())
    for flag in seccomp.CLONE_NEW_FLAGS:
        assert mask & flag == flag, hex(flag)
    assert mask == 0x7E020080


def test_kafel_clone_mask_lets_threads_be_created() -> None:
    mask = clone_mask(seccomp.kafel_policy())
    assert mask & CLONE_THREAD == 0
    assert mask & CLONE_VM == 0


def test_clone_new_flags_are_the_namespace_flags() -> None:
    assert set(seccomp.CLONE_NEW_FLAGS) == {
        0x00000080,  # NEWTIME
        0x00020000,  # NEWNS
        0x02000000,  # NEWCGROUP
        0x04000000,  # NEWUTS
        0x08000000,  # NEWIPC
        0x10000000,  # NEWUSER
        0x20000000,  # NEWPID
        0x40000000,  # NEWNET
    }


def test_kafel_denies_both_terminal_injection_ioctls_on_the_low_32_bits() -> None:
    policy = seccomp.kafel_policy()
    assert (
        "ioctl(fd, cmd) { (cmd & 0xffffffff) == 0x5412 || (cmd & 0xffffffff) == 0x541c }" in policy
    )
    assert (seccomp.TIOCSTI, seccomp.TIOCLINUX) == (0x5412, 0x541C)


def test_kafel_allows_only_unix_sockets() -> None:
    policy = seccomp.kafel_policy()
    assert (
        f"ERRNO({errno.EAFNOSUPPORT}) {{ socket(domain) {{ domain != 1 }},"
        " socketpair(domain) { domain != 1 } }" in policy
    )
    assert seccomp.AF_UNIX == 1


def test_kafel_makes_clone3_fall_back_to_clone() -> None:
    assert f"ERRNO({errno.ENOSYS}) {{ clone3 }}" in seccomp.kafel_policy()
