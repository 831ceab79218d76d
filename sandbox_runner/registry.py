"""The runner's tools: from verified manifests, staged where the sandbox can read them.

Only tools of manifests that verify against the publisher trust store are known.
Each agent's directory is copied at start from `agents_dir` into the runner's own
work dir, owned by the runner and world-readable, so the sandbox uid can read it
whatever the permissions of the checkout it came from, and a tool cannot change
under a running runner.

States: `ready`; `failed` (transient: its last run failed — last error and when);
`unavailable` (permanent until fixed: entrypoint or interpreter missing, with how
to fix it). Every tool counts successes and errors and keeps its last duration.
All updates happen on the event loop, between awaits, so they never interleave.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from regate.manifest import SignedManifest, ToolSpec
from regate.settings import ConfigError

log = structlog.get_logger("regate.runner.registry")
# Where the sandbox finds interpreters named without a path (its PATH).
SANDBOX_PATH = ("/usr/bin", "/bin")
SCRIPT_SUFFIXES = (".py", ".sh", ".js", ".mjs", ".rb", ".pl", ".php", ".lua")


@dataclass
class ToolHealth:
    agent_id: str
    spec: ToolSpec
    state: str  # "ready" | "failed" | "unavailable"
    detail: str = ""
    successes: int = 0
    errors: int = 0
    last_error: dict[str, Any] | None = None
    last_error_at: str | None = None
    last_duration_ms: float | None = None

    @property
    def name(self) -> str:
        return f"{self.agent_id}.{self.spec.name}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "detail": self.detail,
            "successes": self.successes,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_duration_ms": self.last_duration_ms,
        }


@dataclass
class ToolRegistry:
    root: Path
    tools: dict[str, ToolHealth] = field(default_factory=dict)

    def get(self, agent_id: str, tool: str) -> ToolHealth | None:
        return self.tools.get(f"{agent_id}.{tool}")

    def agent_dir(self, agent_id: str) -> Path:
        return self.root / agent_id

    def record(self, health: ToolHealth, ok: bool, error: Any, duration_ms: float) -> None:
        health.last_duration_ms = duration_ms
        if ok:
            health.successes += 1
            if health.state == "failed":
                health.state, health.detail = "ready", ""
            return
        health.errors += 1
        health.last_error = error if isinstance(error, dict) else {"message": str(error)}
        health.last_error_at = datetime.now(UTC).isoformat(timespec="seconds")
        if health.state == "ready":
            health.state = "failed"
            health.detail = "its last run failed; it is retried on the next call"

    def summary(self) -> dict[str, int]:
        counts = {"ready": 0, "failed": 0, "unavailable": 0}
        for tool in self.tools.values():
            counts[tool.state] += 1
        return counts


def make_work_dir() -> Path:
    """A fresh staging dir of our own: unique, owned by us, and reachable by the
    sandbox uid (/tmp is world-searchable, which a checkout under /root is not)."""
    path = Path(tempfile.mkdtemp(prefix="regate-runner-"))
    path.chmod(0o755)  # read-only for others on purpose
    return path


def build_registry(
    manifests: dict[str, SignedManifest], agents_dir: Path, work_dir: Path
) -> ToolRegistry:
    root = work_dir / "tools"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if os.geteuid() == 0:  # tools run as the sandbox uid, not as us
        _require_traversable(root)
    registry = ToolRegistry(root=root)
    for agent_id, manifest in sorted(manifests.items()):
        source = agents_dir / agent_id
        staged = root / agent_id
        problem = ""
        if source.is_symlink():
            problem = f"{source} is a symlink; an agent's directory must be a real directory"
        elif source.is_dir():
            # Links are copied as links and then removed: a link planted in an agent's
            # directory must never make the runner copy a host file for the tool.
            shutil.copytree(source, staged, symlinks=True)
            _open_read_only(staged)
        else:
            problem = f"no tool directory {source}; put the agent's files there and restart"
        for spec in manifest.tools.values():
            detail = problem or entrypoint_problem(spec, staged)
            health = ToolHealth(agent_id, spec, "unavailable" if detail else "ready", detail)
            registry.tools[health.name] = health
    log.info("tools_staged", root=str(root), **registry.summary())
    for tool in registry.tools.values():
        if tool.state == "unavailable":
            log.warning("tool_unavailable", tool=tool.name, detail=tool.detail)
    return registry


def entrypoint_problem(spec: ToolSpec, tool_dir: Path) -> str:
    """Why this entrypoint cannot run in the sandbox, or '' if it can."""
    program, *args = spec.entrypoint
    if "/" not in program:
        if not any(Path(d, program).is_file() for d in SANDBOX_PATH):
            return (
                f"interpreter {program!r} is not installed in /usr/bin; install it on the"
                " runner's host (e.g. apt-get install) or change the entrypoint"
            )
    elif program.startswith("/"):
        if not program.startswith("/usr/") and not program.startswith("/tool/"):
            return f"entrypoint {program!r} is outside /usr and /tool, which the sandbox sees"
        if program.startswith("/usr/") and not Path(program).is_file():
            return f"entrypoint {program!r} does not exist on the runner's host"
    elif not (tool_dir / program).is_file():
        return f"entrypoint {program!r} is missing from the agent's directory"
    for previous, arg in zip(["", *args], args, strict=False):
        if previous in ("-m", "-c", "-e"):
            continue  # a module name or inline code, not a file
        is_script = arg.endswith(SCRIPT_SUFFIXES) and not arg.startswith("-")
        if is_script and not (tool_dir / arg).is_file():
            return f"script {arg!r} is missing from the agent's directory; add it and restart"
    return ""


def _open_read_only(tree: Path) -> None:
    # World-readable on purpose: the sandbox uid must read the tools (never write).
    for dirpath, dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)  # noqa: S103
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                path.unlink()
                log.warning("tool_symlink_removed", path=str(path))
            elif stat.S_ISREG(mode):
                path.chmod(0o755 if mode & stat.S_IXUSR else 0o644)


def _require_traversable(path: Path) -> None:
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise ConfigError(
                f"runner.work_dir {path}: {parent} is not searchable by other users, so the"
                f" sandbox uid cannot reach the tools; use a work_dir under a path with o+x"
                f" (e.g. /var/lib/regate) or 'chmod o+x {parent}'"
            )
