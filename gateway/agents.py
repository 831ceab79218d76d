"""The agents the gateway can route to: approved manifests by agent id, and why others are not.

A registry is an immutable snapshot; gateway/catalog.py builds a new one whenever a
manifest file, the publisher trust store or an approval changes, and swaps it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.errors import AgentNotApproved, AgentNotFound, ToolNotFound
from gateway.lifecycle import APPROVED, QUARANTINED, REVOKED, AgentRecord
from gateway.lifecycle import with_approved_permissions as _with_approved_permissions
from regate.manifest import SignedManifest, ToolSpec


@dataclass(frozen=True)
class Withheld:
    """An agent whose manifest verifies but which is not approved, and why."""

    state: str  # pending, quarantined or revoked
    version: str
    tools: tuple[str, ...] = ()  # the quarantined tools


@dataclass(frozen=True)
class AgentRegistry:
    agents: Mapping[str, SignedManifest]  # callable: approved, with approved permissions
    rejected: Mapping[str, str] = field(default_factory=dict)  # file name -> reason
    withheld: Mapping[str, Withheld] = field(default_factory=dict)

    def resolve(
        self, agent_id: str, tool_name: str, *, now: datetime | None = None
    ) -> tuple[SignedManifest, ToolSpec]:
        agent = self.agents.get(agent_id)
        if agent is None:
            withheld = self.withheld.get(agent_id)
            if withheld is not None:
                raise AgentNotApproved(
                    not_approved_message(agent_id, withheld),
                    agent_id=agent_id,
                    state=withheld.state,
                )
            raise AgentNotFound(
                f"no callable agent {agent_id!r}: it is unknown or its manifest was refused",
                agent_id=agent_id,
            )
        if agent.expires is not None and agent.expires <= (now or datetime.now(UTC)):
            raise AgentNotFound(
                f"the manifest of agent {agent_id!r} expired at {agent.expires.isoformat()};"
                " the publisher must re-sign it",
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


def not_approved_message(agent_id: str, withheld: Withheld) -> str:
    if withheld.state == QUARANTINED:
        return (
            f"agent {agent_id!r} is quarantined: the definition of {list(withheld.tools)} changed"
            f" since it was approved (version {withheld.version} now); it is not callable until"
            " an admin reviews the change and approves it again"
        )
    if withheld.state == REVOKED:
        return (
            f"agent {agent_id!r} was revoked by an admin; it is not callable until an admin"
            " approves it again"
        )
    return (
        f"agent {agent_id!r} (version {withheld.version}) awaits approval: an admin must approve"
        " its manifest before it can be called"
    )


def build_registry(
    manifests: Mapping[str, SignedManifest],
    records: Mapping[str, AgentRecord],
    rejected: Mapping[str, str],
) -> AgentRegistry:
    """Approved agents become callable; every other verified one is withheld with its state."""
    callable_agents: dict[str, SignedManifest] = {}
    withheld: dict[str, Withheld] = {}
    for agent_id, manifest in sorted(manifests.items()):
        record = records.get(agent_id)
        approval = record.approval if record else None
        if (
            record is not None
            and record.state == APPROVED
            and approval is not None
            and approval.manifest_sha256 == manifest.sha256
        ):
            callable_agents[agent_id] = _with_approved_permissions(manifest, approval)
            continue
        withheld[agent_id] = Withheld(
            state=record.state if record else "pending",
            version=manifest.version,
            tools=tuple(str(change["tool"]) for change in record.diff) if record else (),
        )
    return AgentRegistry(agents=callable_agents, rejected=dict(rejected), withheld=withheld)
