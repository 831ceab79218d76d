"""Regate's tools as MCP sees them: names, listings filtered by policy, call results.

A tool is named `<agent_id>.<tool>`. Agent ids and tool names match
`^[a-z][a-z0-9_-]*$`, so the first "." splits a name without ambiguity.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from gateway.agents import AgentRegistry
from gateway.auth import Caller
from gateway.errors import CallParked
from gateway.policy import PolicyClient
from gateway.policy_input import RequestFacts, build_policy_input
from gateway.usage import Usage
from regate.manifest import SignedManifest, ToolSpec

META_DECISION_ID = "regate.dev/decision_id"
META_METRICS = "regate.dev/metrics"
# In `tools/call` params: replay a parked call with its approval (docs/mcp.md).
META_APPROVAL_ID = "regate.dev/approval_id"
NO_USAGE = Usage(calls_last_minute=0, tool_calls_last_minute=0)
# A tool that needs an admin's approval is callable: the call is parked, then replayed.
LISTED_OUTCOMES = ("allow", "require_approval")


def mcp_name(agent_id: str, tool: str) -> str:
    return f"{agent_id}.{tool}"


def split_name(name: str) -> tuple[str, str]:
    """`calculator.add` -> (`calculator`, `add`); a name without "." names no tool."""
    agent_id, _, tool = name.partition(".")
    return agent_id, tool


def offered_tools(agents: AgentRegistry) -> list[tuple[SignedManifest, ToolSpec]]:
    """Every tool whose description passed the checks, in a stable order."""
    return [
        (agent, tool)
        for _, agent in sorted(agents.agents.items())
        for _, tool in sorted(agent.tools.items())
        if not tool.flags
    ]


async def callable_tools(
    agents: AgentRegistry, policy: PolicyClient, caller: Caller, request: RequestFacts
) -> list[dict[str, Any]]:
    """The MCP tool descriptors of the offered tools that policy lets `caller` call.

    One policy question per tool, as for a call but with `arguments: {}`,
    `request.method: "tools/list"` and no usage (a listing says what the caller
    may call, not whether it is within a rate right now). A tool whose decision
    depends on the arguments is listed only if policy allows it with none. A tool
    that needs an admin's approval is listed: its calls are parked for one.
    `PolicyUnavailable` propagates: no answer is better than a wrong list.
    """
    listing = RequestFacts(
        id=request.id,
        time=request.time,
        source_ip=request.source_ip,
        method="tools/list",
        path=request.path,
    )
    candidates = offered_tools(agents)
    decisions = await asyncio.gather(
        *(
            policy.decide(
                build_policy_input(
                    caller=caller,
                    agent=agent,
                    tool=tool,
                    arguments={},
                    request=listing,
                    usage=NO_USAGE,
                )
            )
            for agent, tool in candidates
        )
    )
    return [
        descriptor(agent, tool)
        for (agent, tool), decision in zip(candidates, decisions, strict=True)
        if decision.outcome in LISTED_OUTCOMES
    ]


def descriptor(agent: SignedManifest, tool: ToolSpec) -> dict[str, Any]:
    return {
        "name": mcp_name(agent.agent_id, tool.name),
        "description": tool.description,
        "inputSchema": dict(tool.input_schema),
    }


def call_result(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """A `CallToolResult` from the pipeline's answer: the tool ran, well or not."""
    meta = {META_DECISION_ID: outcome["decision_id"], META_METRICS: outcome.get("metrics", {})}
    if outcome["ok"]:
        value = outcome.get("result")
        result: dict[str, Any] = {
            "content": [{"type": "text", "text": json.dumps(value, ensure_ascii=False)}],
            "isError": False,
            "_meta": meta,
        }
        if isinstance(value, dict):
            result["structuredContent"] = value
        return result
    error = outcome.get("error")
    if not isinstance(error, dict):
        error = {}
    kind = error.get("type", "tool_error")
    message = error.get("message", "the tool failed")
    return {
        "content": [{"type": "text", "text": f"the tool failed ({kind}): {message}"}],
        "structuredContent": {"error": {"type": kind, "message": message}},
        "isError": True,
        "_meta": meta,
    }


def parked_result(parked: CallParked) -> dict[str, Any]:
    """A `CallToolResult` for a call parked until an admin approves it: a tool error
    (the model reads it) carrying the approval id, and how to replay the call."""
    details = parked.details
    approval = {
        "approval_id": details["approval_id"],
        "status": "pending",
        "expires_at": details["expires_at"],
        "reasons": details["reasons"],
    }
    return {
        "content": [{"type": "text", "text": parked.message}],
        "structuredContent": {"approval": approval},
        "isError": True,
        "_meta": {
            META_DECISION_ID: details["decision_id"],
            META_APPROVAL_ID: details["approval_id"],
        },
    }
