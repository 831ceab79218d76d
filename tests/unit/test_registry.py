"""The runner's tool registry (`sandbox_runner.registry`): entrypoint checks, staging
from verified manifests, and per-tool health."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regate import crypto
from regate.manifest import SignedManifest, ToolSpec, sign_manifest, verify_manifest
from regate.settings import ConfigError
from sandbox_runner.registry import (
    ToolHealth,
    ToolRegistry,
    build_registry,
    entrypoint_problem,
)

# --- helpers -----------------------------------------------------------------


def spec(*entrypoint: str, name: str = "t") -> ToolSpec:
    return ToolSpec(
        name=name,
        description="A test tool.",
        input_schema={"type": "object"},
        entrypoint=tuple(entrypoint),
        limits={},
        permissions=("net:none",),
    )


def tool_doc(name: str, *entrypoint: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The {name} tool.",
        "input_schema": {"type": "object"},
        "entrypoint": list(entrypoint),
    }


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> tuple[crypto.Jwk, crypto.KeySet]:
    private, public = crypto.generate_ec_key("publisher-1")
    jwks = tmp_path_factory.mktemp("keys") / "publishers.jwks.json"
    crypto.write_jwks(jwks, [public])
    return private, crypto.load_jwks(jwks)


@pytest.fixture
def signed(
    trusted: tuple[crypto.Jwk, crypto.KeySet],
) -> Any:
    private, keys = trusted

    def make(agent_id: str, *tools: dict[str, Any]) -> SignedManifest:
        document = {"agent_id": agent_id, "version": "1.0.0", "tools": list(tools)}
        return verify_manifest(sign_manifest(document, private), keys)

    return make


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """World-searchable, as the sandbox uid needs (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="regate-unit-registry-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def write(path: Path, text: str, perms: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(perms)
    return path


# --- entrypoint_problem ---------------------------------------------------------


@pytest.fixture
def tool_dir(tmp_path: Path) -> Path:
    write(tmp_path / "add.py", "print(1)\n", 0o644)
    write(tmp_path / "run.sh", "#!/bin/sh\n", 0o755)
    write(tmp_path / "bin" / "tool", "#!/bin/sh\n", 0o755)
    return tmp_path


@pytest.mark.parametrize(
    "entrypoint",
    [
        pytest.param(("python3",), id="interpreter-on-path"),
        pytest.param(("python3", "add.py"), id="interpreter-and-present-script"),
        pytest.param(("python3", "./add.py"), id="dot-slash-script"),
        pytest.param(("python3", "-I", "add.py"), id="flag-ignored"),
        pytest.param(("python3", "-I", "-u", "add.py", "--verbose"), id="several-flags-ignored"),
        pytest.param(("/usr/bin/python3", "add.py"), id="absolute-usr-present"),
        pytest.param(("bin/tool",), id="relative-program-present"),
        pytest.param(("./run.sh",), id="dot-slash-program-present"),
        pytest.param(("sh", "run.sh"), id="sh-and-present-script"),
    ],
)
def test_runnable_entrypoints_have_no_problem(tool_dir: Path, entrypoint: tuple[str, ...]) -> None:
    assert entrypoint_problem(spec(*entrypoint), tool_dir) == ""


@pytest.mark.parametrize(
    ("entrypoint", "problem"),
    [
        pytest.param(("no-such-interp", "add.py"), "interpreter 'no-such-interp' is not installed in /usr/bin; install it on the runner's host (e.g. apt-get install) or change the entrypoint", id="missing-interpreter"),
        pytest.param(("/usr/bin/no-such-binary",), "entrypoint '/usr/bin/no-such-binary' does not exist on the runner's host", id="absolute-usr-missing"),
        pytest.param(("/etc/passwd",), "entrypoint '/etc/passwd' is outside /usr and /tool, which the sandbox sees", id="absolute-outside-usr-and-tool"),
        pytest.param(("/opt/tool/run",), "entrypoint '/opt/tool/run' is outside /usr and /tool, which the sandbox sees", id="absolute-opt"),
        pytest.param(("/usrlocal/x",), "entrypoint '/usrlocal/x' is outside /usr and /tool, which the sandbox sees", id="usr-prefix-without-slash"),
        pytest.param(("bin/missing",), "entrypoint 'bin/missing' is missing from the agent's directory", id="relative-program-missing"),
        pytest.param(("./nope.sh",), "entrypoint './nope.sh' is missing from the agent's directory", id="dot-slash-program-missing"),
        pytest.param(("python3", "stats.py"), "script 'stats.py' is missing from the agent's directory; add it and restart", id="script-missing"),
        pytest.param(("python3", "-I", "stats.py"), "script 'stats.py' is missing from the agent's directory; add it and restart", id="script-missing-after-flag"),
        pytest.param(("python3", "add.py", "extra.sh"), "script 'extra.sh' is missing from the agent's directory; add it and restart", id="second-file-argument-missing"),
    ],
)  # fmt: skip
def test_unrunnable_entrypoints_say_why(
    tool_dir: Path, entrypoint: tuple[str, ...], problem: str
) -> None:
    assert entrypoint_problem(spec(*entrypoint), tool_dir) == problem


def test_script_present_in_one_dir_missing_in_another(tool_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert entrypoint_problem(spec("python3", "add.py"), tool_dir) == ""
    assert "'add.py' is missing" in entrypoint_problem(spec("python3", "add.py"), empty)


@pytest.mark.parametrize(
    "entrypoint",
    [
        pytest.param(("python3", "-m", "json.tool"), id="module"),
        pytest.param(("python3", "-c", "print(1.5)"), id="inline-code"),
    ],
)
def test_non_file_arguments_with_a_dot_are_not_scripts(
    tool_dir: Path, entrypoint: tuple[str, ...]
) -> None:
    assert entrypoint_problem(spec(*entrypoint), tool_dir) == ""


# --- build_registry ---------------------------------------------------------------


def test_tools_are_staged_world_readable(signed: Any, tmp_path: Path, work_dir: Path) -> None:
    agents = tmp_path / "agents"
    write(agents / "calc" / "add.py", "print('add')\n", 0o600)
    write(agents / "calc" / "run.sh", "#!/bin/sh\necho hi\n", 0o700)
    write(agents / "calc" / "lib" / "deep" / "helper.py", "X = 1\n", 0o640)
    (agents / "calc" / "lib").chmod(0o700)
    (agents / "calc" / "lib" / "deep").chmod(0o700)
    manifest = signed(
        "calc", tool_doc("add", "python3", "add.py"), tool_doc("shell", "sh", "run.sh")
    )

    registry = build_registry({"calc": manifest}, agents, work_dir)

    root = work_dir / "tools"
    staged = root / "calc"
    assert registry.root == root
    assert registry.agent_dir("calc") == staged
    assert (staged / "add.py").read_text() == "print('add')\n"
    assert (staged / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert (staged / "lib" / "deep" / "helper.py").read_text() == "X = 1\n"
    assert {str(p.relative_to(staged)): mode(p) for p in sorted(staged.rglob("*"))} == {
        "add.py": 0o644,
        "run.sh": 0o755,
        "lib": 0o755,
        "lib/deep": 0o755,
        "lib/deep/helper.py": 0o644,
    }
    assert mode(staged) == 0o755
    # The originals are untouched.
    assert mode(agents / "calc" / "add.py") == 0o600
    assert mode(agents / "calc" / "lib") == 0o700

    assert sorted(registry.tools) == ["calc.add", "calc.shell"]
    add = registry.get("calc", "add")
    assert add is not None
    assert (add.name, add.state, add.detail) == ("calc.add", "ready", "")
    assert add.spec == manifest.tools["add"]
    assert registry.get("calc", "nope") is None
    assert registry.summary() == {"ready": 2, "failed": 0, "unavailable": 0}


def test_tool_with_a_missing_script_is_unavailable(
    signed: Any, tmp_path: Path, work_dir: Path
) -> None:
    agents = tmp_path / "agents"
    write(agents / "calc" / "add.py", "", 0o644)
    manifest = signed(
        "calc", tool_doc("add", "python3", "add.py"), tool_doc("stats", "python3", "stats.py")
    )
    registry = build_registry({"calc": manifest}, agents, work_dir)
    stats = registry.get("calc", "stats")
    assert stats is not None
    assert stats.state == "unavailable"
    assert stats.detail == "script 'stats.py' is missing from the agent's directory; add it and restart"  # fmt: skip
    assert registry.summary() == {"ready": 1, "failed": 0, "unavailable": 1}


def test_symlinks_in_an_agent_dir_are_not_staged(
    signed: Any, tmp_path: Path, work_dir: Path
) -> None:
    host = tmp_path / "host"
    write(host / "secret.txt", "host secret\n", 0o600)
    write(host / "dir" / "inner.txt", "inner\n", 0o600)
    agents = tmp_path / "agents"
    calc = agents / "calc"
    write(calc / "add.py", "", 0o644)
    (calc / "leak").symlink_to(host / "secret.txt")
    (calc / "leakdir").symlink_to(host / "dir", target_is_directory=True)
    (calc / "sub").mkdir()
    (calc / "sub" / "nested-leak").symlink_to(host / "secret.txt")
    (calc / "dangling").symlink_to(tmp_path / "does-not-exist")

    registry = build_registry({"calc": signed("calc", tool_doc("add", "python3", "add.py"))}, agents, work_dir)  # fmt: skip

    staged = work_dir / "tools" / "calc"
    for name in ("leak", "leakdir", "sub/nested-leak", "dangling"):
        assert not (staged / name).is_symlink(), name
        assert not (staged / name).exists(), name
    assert sorted(str(p.relative_to(staged)) for p in staged.rglob("*")) == ["add.py", "sub"]
    assert not any("host secret" in p.read_text() for p in staged.rglob("*") if p.is_file())
    # The links and their targets in the source are left alone.
    assert (calc / "leak").is_symlink()
    assert (host / "secret.txt").read_text() == "host secret\n"
    assert registry.summary()["ready"] == 1


def test_symlinked_entrypoint_makes_the_tool_unavailable(
    signed: Any, tmp_path: Path, work_dir: Path
) -> None:
    agents = tmp_path / "agents"
    write(tmp_path / "host.py", "print('host')\n", 0o644)
    (agents / "calc").mkdir(parents=True)
    (agents / "calc" / "add.py").symlink_to(tmp_path / "host.py")
    registry = build_registry({"calc": signed("calc", tool_doc("add", "python3", "add.py"))}, agents, work_dir)  # fmt: skip
    add = registry.get("calc", "add")
    assert add is not None
    assert add.state == "unavailable"
    assert "'add.py' is missing" in add.detail


def test_agent_without_a_directory_has_every_tool_unavailable(
    signed: Any, tmp_path: Path, work_dir: Path
) -> None:
    agents = tmp_path / "agents"
    write(agents / "calc" / "add.py", "", 0o644)
    manifests = {
        "calc": signed("calc", tool_doc("add", "python3", "add.py")),
        "ghost": signed("ghost", tool_doc("one", "python3", "one.py"), tool_doc("two", "python3")),
    }
    registry = build_registry(manifests, agents, work_dir)
    expected = f"no tool directory {agents / 'ghost'}; put the agent's files there and restart"
    for name in ("one", "two"):
        tool = registry.get("ghost", name)
        assert tool is not None
        assert (tool.state, tool.detail) == ("unavailable", expected)
    assert not (work_dir / "tools" / "ghost").exists()
    assert registry.summary() == {"ready": 1, "failed": 0, "unavailable": 2}


def test_a_file_in_place_of_the_agent_directory_is_missing(
    signed: Any, tmp_path: Path, work_dir: Path
) -> None:
    agents = tmp_path / "agents"
    write(agents / "calc", "not a directory", 0o644)
    registry = build_registry({"calc": signed("calc", tool_doc("add", "python3"))}, agents, work_dir)  # fmt: skip
    add = registry.get("calc", "add")
    assert add is not None
    assert add.state == "unavailable"
    assert add.detail.startswith(f"no tool directory {agents / 'calc'};")


def test_restaging_replaces_the_previous_tree(signed: Any, tmp_path: Path, work_dir: Path) -> None:
    agents = tmp_path / "agents"
    write(agents / "calc" / "add.py", "new\n", 0o644)
    write(work_dir / "tools" / "calc" / "stale.py", "old\n", 0o644)
    write(work_dir / "tools" / "removed-agent" / "x.py", "old\n", 0o644)
    build_registry({"calc": signed("calc", tool_doc("add", "python3", "add.py"))}, agents, work_dir)  # fmt: skip
    assert sorted(p.name for p in (work_dir / "tools").iterdir()) == ["calc"]
    assert sorted(p.name for p in (work_dir / "tools" / "calc").iterdir()) == ["add.py"]


def test_no_manifests_is_an_empty_registry(tmp_path: Path, work_dir: Path) -> None:
    registry = build_registry({}, tmp_path, work_dir)
    assert registry.tools == {}
    assert registry.summary() == {"ready": 0, "failed": 0, "unavailable": 0}
    assert (work_dir / "tools").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="the traversal check only runs as root")
def test_work_dir_the_sandbox_uid_cannot_reach_is_refused(signed: Any, tmp_path: Path) -> None:
    # pytest's tmp_path lives under a 0700 directory.
    blocked = next(p for p in [tmp_path, *tmp_path.parents] if not p.stat().st_mode & stat.S_IXOTH)
    with pytest.raises(ConfigError, match="is not searchable by other users") as caught:
        build_registry({"calc": signed("calc", tool_doc("add", "python3"))}, tmp_path, tmp_path)
    assert f": {blocked} is not searchable" in str(caught.value)
    assert f"chmod o+x {blocked}" in str(caught.value)


def test_agent_directory_that_is_a_symlink_stages_no_host_files(
    signed: Any, tmp_path: Path, work_dir: Path
) -> None:
    host = tmp_path / "host"
    write(host / "secret.txt", "host secret\n", 0o600)
    write(host / "add.py", "", 0o644)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "calc").symlink_to(host, target_is_directory=True)
    build_registry({"calc": signed("calc", tool_doc("add", "python3", "add.py"))}, agents, work_dir)  # fmt: skip
    assert not (work_dir / "tools" / "calc" / "secret.txt").exists()


# --- ToolRegistry.record and summary ----------------------------------------------


def health(state: str = "ready", detail: str = "", name: str = "add") -> ToolHealth:
    return ToolHealth("calc", spec("python3", "add.py", name=name), state, detail)


def test_error_turns_ready_into_failed() -> None:
    registry = ToolRegistry(root=Path("/nonexistent"))
    tool = health()
    before = datetime.now(UTC).replace(microsecond=0)
    error = {"type": "timeout", "message": "the tool ran past its 2 s timeout"}
    registry.record(tool, ok=False, error=error, duration_ms=2003.5)
    assert tool.state == "failed"
    assert tool.detail == "its last run failed; it is retried on the next call"
    assert (tool.successes, tool.errors) == (0, 1)
    assert tool.last_error == error
    assert tool.last_duration_ms == 2003.5
    assert tool.last_error_at is not None
    at = datetime.fromisoformat(tool.last_error_at)
    assert at.tzinfo is not None
    assert before <= at <= datetime.now(UTC) + timedelta(seconds=1)


def test_non_dict_error_is_wrapped() -> None:
    tool = health()
    ToolRegistry(root=Path("/nonexistent")).record(tool, False, RuntimeError("boom"), 1.0)
    assert tool.last_error == {"message": "boom"}


def test_success_turns_failed_back_into_ready() -> None:
    registry = ToolRegistry(root=Path("/nonexistent"))
    tool = health()
    registry.record(tool, False, {"type": "crashed", "message": "m"}, 5.0)
    registry.record(tool, False, {"type": "tool_error", "message": "m2"}, 6.0)
    assert (tool.state, tool.errors) == ("failed", 2)
    registry.record(tool, True, None, 7.0)
    assert (tool.state, tool.detail) == ("ready", "")
    assert (tool.successes, tool.errors) == (1, 2)
    assert tool.last_duration_ms == 7.0
    # The last error stays on record after recovery.
    assert tool.last_error == {"type": "tool_error", "message": "m2"}


def test_success_keeps_ready_ready() -> None:
    tool = health()
    ToolRegistry(root=Path("/nonexistent")).record(tool, True, None, 1.5)
    assert (tool.state, tool.successes, tool.errors) == ("ready", 1, 0)
    assert tool.last_error is None
    assert tool.last_error_at is None


@pytest.mark.parametrize("ok", [True, False])
def test_unavailable_stays_unavailable(ok: bool) -> None:
    tool = health("unavailable", "interpreter 'x' is not installed")
    ToolRegistry(root=Path("/nonexistent")).record(tool, ok, {"type": "crashed"}, 1.0)
    assert tool.state == "unavailable"
    assert tool.detail == "interpreter 'x' is not installed"
    assert (tool.successes, tool.errors) == ((1, 0) if ok else (0, 1))


def test_summary_counts_each_state() -> None:
    tools = [
        health("ready", name="a"),
        health("ready", name="b"),
        health("failed", name="c"),
        health("unavailable", name="d"),
    ]
    registry = ToolRegistry(root=Path("/nonexistent"), tools={t.name: t for t in tools})
    assert registry.summary() == {"ready": 2, "failed": 1, "unavailable": 1}
    registry.record(tools[0], False, {"message": "x"}, 1.0)
    assert registry.summary() == {"ready": 1, "failed": 2, "unavailable": 1}
    registry.record(tools[2], True, None, 1.0)
    assert registry.summary() == {"ready": 2, "failed": 1, "unavailable": 1}


def test_health_as_json() -> None:
    tool = health()
    ToolRegistry(root=Path("/nonexistent")).record(tool, False, {"message": "x"}, 4.0)
    body = tool.as_json()
    assert body == {
        "name": "calc.add",
        "state": "failed",
        "detail": "its last run failed; it is retried on the next call",
        "successes": 0,
        "errors": 1,
        "last_error": {"message": "x"},
        "last_error_at": tool.last_error_at,
        "last_duration_ms": 4.0,
    }
    assert isinstance(body["last_error_at"], str)
