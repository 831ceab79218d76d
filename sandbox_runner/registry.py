"""The runner's tools: staged copies of each agent's directory, with health and counts.

Tools are copied at startup from `agents_dir` into the runner's own work dir,
owned by the runner and world-readable, so the sandbox uid can read them whatever
the permissions of the checkout they came from — and a tool cannot change under a
running runner.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from regate.settings import ConfigError

log = structlog.get_logger("regate.runner.registry")


@dataclass
class ToolHealth:
    agent_id: str
    name: str
    state: str  # "ready" | "unavailable"
    detail: str = ""
    successes: int = 0
    errors: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": f"{self.agent_id}.{self.name}",
            "state": self.state,
            "detail": self.detail,
            "successes": self.successes,
            "errors": self.errors,
        }


@dataclass
class ToolRegistry:
    root: Path
    tools: dict[str, ToolHealth] = field(default_factory=dict)

    def agent_dir(self, agent_id: str) -> Path | None:
        path = self.root / agent_id
        return path if any(t.agent_id == agent_id for t in self.tools.values()) else None

    def count(self, agent_id: str, tool: str, ok: bool) -> None:
        health = self.tools.get(f"{agent_id}.{tool}")
        if health is None:
            return
        if ok:
            health.successes += 1
        else:
            health.errors += 1


def make_work_dir() -> Path:
    """A fresh staging dir of our own: unique, owned by us, and reachable by the
    sandbox uid (/tmp is world-searchable, which a checkout under /root is not)."""
    path = Path(tempfile.mkdtemp(prefix="regate-runner-"))
    path.chmod(0o755)
    return path


def stage_tools(agents_dir: Path, work_dir: Path) -> ToolRegistry:
    root = work_dir / "tools"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if os.geteuid() == 0:  # tools run as the sandbox uid, not as us
        _require_traversable(root)
    registry = ToolRegistry(root=root)
    for manifest_path in sorted(agents_dir.glob("*/manifest.json")):
        source = manifest_path.parent
        try:
            manifest = json.loads(manifest_path.read_text())
            agent_id = manifest["agent_id"]
            tools = manifest["tools"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("agent_skipped", dir=str(source), reason=f"unreadable manifest.json: {exc}")
            continue
        target = root / agent_id
        shutil.copytree(source, target, symlinks=False)
        _open_read_only(target)
        for tool in tools:
            entry = ToolHealth(agent_id=agent_id, name=tool.get("name", "?"), state="ready")
            script = next((p for p in tool.get("entrypoint", [])[1:] if p.endswith(".py")), None)
            if script and not (target / script).is_file():
                entry.state = "unavailable"
                entry.detail = f"entrypoint file {script!r} is missing from {source}"
            registry.tools[f"{agent_id}.{entry.name}"] = entry
    log.info("tools_staged", root=str(root), tools=sorted(registry.tools))
    return registry


def _open_read_only(tree: Path) -> None:
    # World-readable on purpose: the sandbox uid must read the tools (never write).
    for dirpath, _dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)  # noqa: S103
        for name in filenames:
            path = Path(dirpath, name)
            mode = path.stat().st_mode
            path.chmod(0o755 if mode & stat.S_IXUSR else 0o644)


def _require_traversable(path: Path) -> None:
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise ConfigError(
                f"runner.work_dir {path}: {parent} is not searchable by other users, so the"
                f" sandbox uid cannot reach the tools; use a work_dir under a path with o+x"
                f" (e.g. /var/lib/regate) or 'chmod o+x {parent}'"
            )
