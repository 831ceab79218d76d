"""Reading the per-call cgroup files (sandbox_runner/cgroups.py), on plain files
laid out as the kernel's: whole files, however long, and absent ones."""

from __future__ import annotations

from pathlib import Path

from sandbox_runner.cgroups import CallCgroup, CgroupSupport


def v1_group(root: Path) -> CallCgroup:
    dirs = [root / name / "call" for name in ("memory", "pids", "cpuacct")]
    for directory in dirs:
        directory.mkdir(parents=True)
    support = CgroupSupport(1, root / "memory", root / "pids", root / "cpuacct")
    return CallCgroup(support, *dirs)


def test_every_member_is_read_from_a_long_procs_file(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    pids = set(range(100_000, 120_000))  # ~140 KiB: more than one read
    (group.memory_dir / "cgroup.procs").write_text("".join(f"{p}\n" for p in sorted(pids)))
    (group.pids_dir / "cgroup.procs").write_text("7\n")
    assert group.members() == pids | {7}


def test_limits_hit_and_cpu_time_are_read(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    (group.memory_dir / "memory.failcnt").write_text("3\n")
    (group.pids_dir / "pids.events").write_text("max 1\n")
    assert group.cpu_dir is not None
    (group.cpu_dir / "cpuacct.usage").write_text("2500000000\n")
    assert group.memory_hit() is True
    assert group.pids_hit() is True
    assert group.cpu_seconds() == 2.5


def test_absent_files_read_as_nothing_hit(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    assert group.members() == set()
    assert group.memory_hit() is False
    assert group.pids_hit() is False
    assert group.cpu_seconds() == 0.0
