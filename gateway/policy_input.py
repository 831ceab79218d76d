"""The policy input document (docs/policy-input.md), built from verified parts only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.auth import Caller
from gateway.usage import Usage
from regate.manifest import SignedManifest, ToolSpec

INPUT_VERSION = 1


@dataclass(frozen=True)
class RequestFacts:
    id: str
    time: str  # RFC 3339, UTC
    source_ip: str
    method: str
    path: str
    source_ip_from: str = "peer"  # or "x-forwarded-for" (from a trusted proxy)


def build_policy_input(
    *,
    caller: Caller,
    agent: SignedManifest,
    tool: ToolSpec,
    arguments: Mapping[str, Any],
    request: RequestFacts,
    usage: Usage,
) -> dict[str, Any]:
    return {
        "input_version": INPUT_VERSION,
        "caller": {
            "sub": caller.sub,
            "iss": caller.iss,
            "claims": dict(caller.claims),
            "act": dict(caller.act) if caller.act else None,
        },
        "target": {
            "agent_id": agent.agent_id,
            "version": agent.version,
            "manifest_sha256": agent.sha256,
            "publisher": agent.publisher,
        },
        "tool": {
            "name": tool.name,
            "permissions": list(tool.permissions),
            "limits": dict(tool.limits),
        },
        "arguments": dict(arguments),
        "request": {
            "id": request.id,
            "time": request.time,
            "source_ip": request.source_ip,
            "source_ip_from": request.source_ip_from,
            "method": request.method,
            "path": request.path,
        },
        "usage": {
            "calls_last_minute": usage.calls_last_minute,
            "tool_calls_last_minute": usage.tool_calls_last_minute,
        },
    }
