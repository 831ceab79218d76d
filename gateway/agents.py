"""The agents the gateway can route to: the verified manifests, by agent id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import AgentNotFound, ToolNotFound
from regate import crypto
from regate.manifest import SignedManifest, ToolSpec
from regate.manifest_dir import load_manifest_dir


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
    agents, refused = load_manifest_dir(directory, publishers)
    return AgentRegistry(agents=agents, rejected=refused)
