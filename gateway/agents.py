"""The agents the gateway can route to: signed manifests loaded from a directory.

Each `<agent_id>.jws` file is verified against the publisher trust store. A file
that fails is refused with a logged reason and its agent is simply not callable;
one bad manifest never stops the others from loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from gateway.errors import AgentNotFound, ToolNotFound
from regate import crypto
from regate.manifest import ManifestError, SignedManifest, ToolSpec, verify_manifest

log = structlog.get_logger("regate.agents")
MAX_MANIFEST_BYTES = 256 * 1024


@dataclass(frozen=True)
class AgentRegistry:
    agents: Mapping[str, SignedManifest]
    rejected: Mapping[str, str] = field(default_factory=dict)  # file name -> reason

    def resolve(self, agent_id: str, tool_name: str) -> tuple[SignedManifest, ToolSpec]:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise AgentNotFound(
                f"no callable agent {agent_id!r}: it is unknown or its manifest was refused",
                agent_id=agent_id,
            )
        tool = agent.tools.get(tool_name)
        if tool is None:
            raise ToolNotFound(
                f"agent {agent_id!r} has no tool {tool_name!r}; it offers {sorted(agent.tools)}",
                agent_id=agent_id,
                tool=tool_name,
            )
        return agent, tool


def load_agents(directory: Path, publishers: crypto.KeySet) -> AgentRegistry:
    agents: dict[str, SignedManifest] = {}
    rejected: dict[str, str] = {}
    for path in sorted(directory.glob("*.jws")):
        try:
            agents[path.stem] = _load_one(path, publishers)
        except ManifestError as exc:
            rejected[path.name] = str(exc)
            log.warning("manifest_refused", file=str(path), reason=str(exc))
    log.info("agents_loaded", agents=sorted(agents), refused=sorted(rejected))
    return AgentRegistry(agents=agents, rejected=rejected)


def _load_one(path: Path, publishers: crypto.KeySet) -> SignedManifest:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"file is larger than {MAX_MANIFEST_BYTES} bytes")
        token = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read: {exc}") from exc
    manifest = verify_manifest(token, publishers)
    # Bind the manifest to where it is served from: a manifest signed for one agent
    # cannot be dropped in under another agent's name.
    if manifest.agent_id != path.stem:
        raise ManifestError(
            f"manifest is for agent {manifest.agent_id!r} but is stored as {path.name!r}"
        )
    return manifest
