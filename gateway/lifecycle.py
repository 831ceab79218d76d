"""The manifest lifecycle: an agent's state, from its verified manifest and its approval.

- `pending`: first seen, or changed since approval without touching an approved
  tool's definition (new version, new tools, other entrypoint, limits or permissions);
- `approved`: an admin approved exactly this manifest (its sha256): the only callable state;
- `quarantined`: an approved tool's name, description or input schema changed, or it
  is gone;
- `revoked`: an admin revoked the agent, until an admin approves it again.

An approval pins each tool's definition by the sha256 of its RFC 8785 canonical
JSON, so a tool cannot silently change what it tells calling agents; the
quarantine keeps the difference, field by field. Plain data and functions: the
store is gateway/approvals.py, reloading and auditing gateway/catalog.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import PermissionsNotRequested
from regate.canonical import digest
from regate.manifest import ManifestError, SignedManifest, ToolSpec
from regate.versions import UnorderableVersion, compare_versions

PENDING = "pending"
APPROVED = "approved"
QUARANTINED = "quarantined"
REVOKED = "revoked"
STATES = (PENDING, APPROVED, QUARANTINED, REVOKED)

# What a calling agent (or its model) is told about a tool: pinned at approval.
PINNED_FIELDS = ("name", "description", "input_schema")

Diff = tuple[Mapping[str, Any], ...]


def tool_definition(tool: ToolSpec) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "input_schema": dict(tool.input_schema),
    }


def tool_pin(tool: ToolSpec) -> str:
    return digest(tool_definition(tool))


@dataclass(frozen=True)
class Approval:
    by: str
    at: str  # RFC 3339
    reason: str
    manifest_sha256: str
    version: str
    publisher: str  # the kid that had signed the approved manifest
    permissions: Mapping[str, tuple[str, ...]]  # tool -> approved (each ⊆ requested)
    tools: Mapping[str, Mapping[str, Any]]  # tool -> its approved definition

    def pins(self) -> dict[str, str]:
        return {name: digest(definition) for name, definition in self.tools.items()}

    def as_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "at": self.at,
            "reason": self.reason,
            "manifest_sha256": self.manifest_sha256,
            "version": self.version,
            "publisher": self.publisher,
            "permissions": {name: list(p) for name, p in self.permissions.items()},
            "tools": {name: dict(d) for name, d in self.tools.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Approval:
        return cls(
            by=data["by"],
            at=data["at"],
            reason=data["reason"],
            manifest_sha256=data["manifest_sha256"],
            version=data["version"],
            publisher=data["publisher"],
            permissions={name: tuple(p) for name, p in data["permissions"].items()},
            tools=data["tools"],
        )


@dataclass(frozen=True)
class Revocation:
    by: str
    at: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"by": self.by, "at": self.at, "reason": self.reason}


@dataclass(frozen=True)
class AgentRecord:
    """What the gateway remembers about an agent across restarts and manifest changes."""

    agent_id: str
    highest_version: str  # the highest version ever seen: a version never goes backwards
    highest_sha256: str  # the manifest seen at that version
    first_seen_at: str
    state: str
    approval: Approval | None = None
    revocation: Revocation | None = None
    diff: Diff = ()  # why it is quarantined

    def replace(self, **changes: Any) -> AgentRecord:
        return dataclasses.replace(self, **changes)


def check_version(manifest: SignedManifest, record: AgentRecord | None) -> None:
    """Refuse a manifest that would take its agent's version backwards, or change it
    without a new version. The highest version seen is what counts, approved or not."""
    if record is None or manifest.sha256 == record.highest_sha256:
        return
    try:
        order = compare_versions(manifest.version, record.highest_version)
    except UnorderableVersion as exc:
        raise ManifestError(str(exc)) from exc
    if order < 0:
        raise ManifestError(
            f"version {manifest.version} is lower than {record.highest_version}, already seen"
            " for this agent; a version never goes backwards (a rollback is refused)"
        )
    if order == 0:
        raise ManifestError(
            f"the manifest changed but keeps version {manifest.version}; a changed manifest"
            " needs a higher version"
        )


def tool_changes(approval: Approval, manifest: SignedManifest) -> Diff:
    """Each approved tool whose pinned definition changed or is gone, with the fields
    that changed: `{"tool", "change": "changed"|"removed", "fields": {f: {"approved", "now"}}}`."""
    changes: list[Mapping[str, Any]] = []
    for name, approved in sorted(approval.tools.items()):
        tool = manifest.tools.get(name)
        if tool is None:
            changes.append({"tool": name, "change": "removed", "fields": {}})
            continue
        now = tool_definition(tool)
        if digest(now) == digest(approved):
            continue
        fields = {
            field: {"approved": approved.get(field), "now": now[field]}
            for field in PINNED_FIELDS
            if digest(approved.get(field)) != digest(now[field])
        }
        changes.append({"tool": name, "change": "changed", "fields": fields})
    return tuple(changes)


def assess(manifest: SignedManifest, record: AgentRecord) -> tuple[str, Diff]:
    """The state of `record`'s agent now that `manifest` is what it serves."""
    if record.revocation is not None:
        return REVOKED, ()
    approval = record.approval
    if approval is None:
        return PENDING, ()
    if approval.manifest_sha256 == manifest.sha256:
        return APPROVED, ()
    changes = tool_changes(approval, manifest)
    if changes:
        return QUARANTINED, changes
    return PENDING, ()


def make_approval(
    manifest: SignedManifest,
    *,
    by: str,
    at: str,
    reason: str,
    permissions: Mapping[str, Sequence[str]] | None = None,
) -> Approval:
    """Approve `manifest`, with all requested permissions or, per tool named in
    `permissions`, a subset of them; anything not requested is refused."""
    chosen = dict(permissions or {})
    unknown = sorted(set(chosen) - set(manifest.tools))
    if unknown:
        raise PermissionsNotRequested(
            f"agent {manifest.agent_id!r} has no tools {unknown}; it offers"
            f" {sorted(manifest.tools)}",
            tools=unknown,
        )
    approved: dict[str, tuple[str, ...]] = {}
    for name, tool in sorted(manifest.tools.items()):
        if name not in chosen:
            approved[name] = tool.permissions
            continue
        wanted = chosen[name]
        if isinstance(wanted, str) or not all(isinstance(p, str) for p in wanted):
            raise PermissionsNotRequested(
                f"permissions for tool {name!r} must be a list of strings",
                tool=name,
            )
        extra = [p for p in wanted if p not in tool.permissions]
        if extra:
            raise PermissionsNotRequested(
                f"tool {name!r} did not request {extra}; approved permissions must be a"
                f" subset of what it requested: {list(tool.permissions)}",
                tool=name,
                not_requested=extra,
                requested=list(tool.permissions),
            )
        approved[name] = tuple(p for p in tool.permissions if p in wanted)
    return Approval(
        by=by,
        at=at,
        reason=reason,
        manifest_sha256=manifest.sha256,
        version=manifest.version,
        publisher=manifest.publisher,
        permissions=approved,
        tools={name: tool_definition(tool) for name, tool in sorted(manifest.tools.items())},
    )


def with_approved_permissions(manifest: SignedManifest, approval: Approval) -> SignedManifest:
    """The manifest as the pipeline and policy see it: each tool with what was approved."""
    tools = {
        name: dataclasses.replace(tool, permissions=approval.permissions.get(name, ()))
        for name, tool in manifest.tools.items()
    }
    return dataclasses.replace(manifest, tools=tools)
