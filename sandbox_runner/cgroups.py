"""Per-call cgroups for memory and process limits, on cgroup v2 or v1, when offered.

bubblewrap gives namespaces, not limits. Where the machine lets the runner create
cgroups (it is root, and the memory and pids controllers are mounted, v1 or v2),
every call gets its own group under the runner's own: `memory` caps resident
memory (the OOM killer ends the tool), `pids` caps processes, and at the end every
process still in the group is killed and the group removed. Where cgroups are not
available the runner says so at start and relies on rlimits alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("regate.runner.cgroups")
ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupSupport:
    """Where to make per-call groups: one parent dir per controller (v1) or one (v2)."""

    version: int
    memory_parent: Path
    pids_parent: Path
    cpuacct_parent: Path | None = None  # v1 only: v2 groups all have cpu.stat

    def describe(self) -> str:
        return f"cgroup v{self.version} (memory, pids, cpu accounting)"


def detect(root: Path = ROOT) -> CgroupSupport | None:
    """The cgroup setup this runner can use, or None (with the reason logged)."""
    if os.geteuid() != 0:
        log.warning("cgroups_unavailable", reason="the runner is not root")
        return None
    own = _own_cgroups()
    v2 = _detect_v2(root, own.get(""))
    if v2 is not None:
        return v2
    memory, pids = own.get("memory"), own.get("pids")
    if memory is not None and pids is not None:
        memory_parent = root / "memory" / memory.lstrip("/") / "regate"
        pids_parent = root / "pids" / pids.lstrip("/") / "regate"
        cpuacct = own.get("cpuacct")
        cpuacct_parent = root / "cpuacct" / cpuacct.lstrip("/") / "regate" if cpuacct else None
        if cpuacct_parent is not None and not _make_parent(cpuacct_parent):
            cpuacct_parent = None
        if _make_parent(memory_parent) and _make_parent(pids_parent):
            return CgroupSupport(1, memory_parent, pids_parent, cpuacct_parent)
    log.warning("cgroups_unavailable", reason="no writable memory and pids controllers")
    return None


def _own_cgroups() -> dict[str, str]:
    """controller -> our path, from /proc/self/cgroup ('' is the v2 unified entry)."""
    groups: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name.removeprefix("name=")] = path
    return groups


def _detect_v2(root: Path, own: str | None) -> CgroupSupport | None:
    for mount in (root, root / "unified"):
        controllers = mount / "cgroup.controllers"
        if own is None or not controllers.exists():
            continue
        # A v2 group can hand controllers to children only from a group with no
        # processes of its own, so ours gets a sibling-free leaf: <own>/regate.
        parent = mount / own.lstrip("/") / "regate"
        if not _make_parent(parent):
            continue
        available = (parent / "cgroup.controllers").read_text().split()
        if {"memory", "pids"} <= set(available):
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+memory +pids")
            if {"memory", "pids"} <= set((parent / "cgroup.subtree_control").read_text().split()):
                return CgroupSupport(2, parent, parent)
    return None


def _make_parent(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


@dataclass
class CallCgroup:
    """The groups of one call: made before the sandbox starts, removed after."""

    support: CgroupSupport
    memory_dir: Path
    pids_dir: Path
    cpu_dir: Path | None = None

    @classmethod
    def create(cls, support: CgroupSupport, memory_mb: int, pids: int) -> CallCgroup:
        name = f"call-{uuid.uuid4().hex[:12]}"
        memory_dir, pids_dir = support.memory_parent / name, support.pids_parent / name
        memory_dir.mkdir()
        if pids_dir != memory_dir:
            pids_dir.mkdir()
        cpu_dir = memory_dir if support.version == 2 else None
        if support.cpuacct_parent is not None:
            cpu_dir = support.cpuacct_parent / name
            cpu_dir.mkdir()
        group = cls(support, memory_dir, pids_dir, cpu_dir)
        limit = str(memory_mb * 1024 * 1024)
        if support.version == 2:
            (memory_dir / "memory.max").write_text(limit)
            swap = memory_dir / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
        else:
            (memory_dir / "memory.limit_in_bytes").write_text(limit)
            with contextlib.suppress(OSError):  # absent without swap accounting
                (memory_dir / "memory.memsw.limit_in_bytes").write_text(limit)
        (pids_dir / "pids.max").write_text(str(pids))
        return group

    @property
    def dirs(self) -> set[Path]:
        return {d for d in (self.memory_dir, self.pids_dir, self.cpu_dir) if d is not None}

    def proc_files(self) -> list[str]:
        """The `cgroup.procs` files the child writes itself into before exec."""
        return sorted(str(d / "cgroup.procs") for d in self.dirs)

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process of the call, or None if not accounted."""
        if self.cpu_dir is None:
            return None
        if self.support.version == 2:
            usage = _keyed(self.cpu_dir / "cpu.stat").get("usage_usec")
            return usage / 1e6 if usage is not None else None
        return _int(self.cpu_dir / "cpuacct.usage") / 1e9

    def memory_hit(self) -> bool:
        if self.support.version == 2:
            events = _keyed(self.memory_dir / "memory.events")
            return events.get("oom_kill", 0) > 0 or events.get("max", 0) > 0
        return _int(self.memory_dir / "memory.failcnt") > 0

    def pids_hit(self) -> bool:
        return _keyed(self.pids_dir / "pids.events").get("max", 0) > 0

    def kill_members(self) -> bool:
        """SIGKILL every process left in the call's groups (daemons, orphans, the
        sandbox's init still exiting); whether there was any."""
        if self.support.version == 2 and (self.memory_dir / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.memory_dir / "cgroup.kill").write_text("1")
        pids = self.members()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return bool(pids)

    def kill_all(self) -> None:
        """`kill_members` until the groups are empty (0.5 s at most). It sleeps: for
        worker threads and error paths (a call's answer polls; see sandbox.py)."""
        for _ in range(50):
            if not self.kill_members():
                return
            time.sleep(0.01)

    def members(self) -> set[int]:
        members: set[int] = set()
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                members.update(int(p) for p in _read(directory / "cgroup.procs").split())
        return members

    def remove(self) -> None:
        self.kill_all()
        for directory in self.dirs:
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still emptying after the kill
                    time.sleep(0.01)
            else:
                log.warning("cgroup_not_removed", path=str(directory))


def _read(path: Path) -> str:
    """A small cgroup file in one read: these are read on every call, and a plain
    read costs a fraction of `Path.read_text`'s text-file machinery."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii", "replace")
    finally:
        os.close(fd)


def _keyed(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
    return values


def _int(path: Path) -> int:
    try:
        return int(_read(path).strip())
    except (OSError, ValueError):
        return 0
