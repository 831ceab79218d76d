"""The manifest lifecycle (`gateway.lifecycle`) and the registry built from it (`gateway.agents`)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.agents import build_registry
from gateway.errors import AgentNotApproved, AgentNotFound, PermissionsNotRequested
from gateway.lifecycle import (
    APPROVED,
    PENDING,
    QUARANTINED,
    REVOKED,
    AgentRecord,
    Approval,
    Revocation,
    assess,
    check_version,
    make_approval,
    tool_changes,
    tool_pin,
)
from regate import crypto
from regate.manifest import ManifestError, SignedManifest, sign_manifest, verify_manifest

KEY, PUBLIC = crypto.generate_ec_key("pub")
KEYS = crypto.KeySet(keys={"pub": PUBLIC}, source="test")
AT = "2026-01-01T00:00:00+00:00"


def document(version: str = "1.0.0", **tool_changes: Any) -> dict[str, Any]:
    return {
        "agent_id": "calc",
        "version": version,
        "tools": [
            {
                "name": "add",
                "description": "Add two numbers.",
                "input_schema": {"type": "object", "properties": {"a": {"type": "number"}}},
                "entrypoint": ["python3", "add.py"],
                "permissions": ["net:none", "fs:read:/data"],
                **tool_changes,
            },
            {
                "name": "stats",
                "description": "Mean of numbers.",
                "input_schema": {"type": "object"},
                "entrypoint": ["python3", "stats.py"],
            },
        ],
    }


def signed(doc: dict[str, Any]) -> SignedManifest:
    return verify_manifest(sign_manifest(doc, KEY), KEYS)


def record_for(manifest: SignedManifest, **changes: Any) -> AgentRecord:
    fields: dict[str, Any] = {
        "agent_id": manifest.agent_id,
        "highest_version": manifest.version,
        "highest_sha256": manifest.sha256,
        "first_seen_at": AT,
        "state": PENDING,
    }
    return AgentRecord(**{**fields, **changes})


def approve(manifest: SignedManifest, **kwargs: Any) -> Approval:
    return make_approval(manifest, by="admin", at=AT, reason="ok", **kwargs)


V1 = signed(document())


# --- versions -------------------------------------------------------------------


def test_first_sight_and_the_same_manifest_pass() -> None:
    check_version(V1, None)
    check_version(V1, record_for(V1))


def test_a_higher_version_passes() -> None:
    check_version(signed(document("1.0.1", description="Add.")), record_for(V1))


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("0.9.0", "lower than 1.0.0"),
        ("1.0.0-rc.1", "lower than 1.0.0"),
        ("1.0.0", "keeps version 1.0.0"),
        ("release-2", "cannot be ordered"),
    ],
)
def test_versions_never_go_backwards(version: str, message: str) -> None:
    changed = signed(document(version, description="Add, differently."))
    with pytest.raises(ManifestError, match=message):
        check_version(changed, record_for(V1))


def test_rollback_is_judged_against_the_highest_version_seen() -> None:
    # Seen 2.0.0 (never approved), approved 1.0.0: going back to 1.0.0 is a rollback.
    v2 = signed(document("2.0.0"))
    record = record_for(v2, approval=approve(V1))
    with pytest.raises(ManifestError, match=r"lower than 2\.0\.0"):
        check_version(V1, record)


# --- states ---------------------------------------------------------------------


def test_new_is_pending_and_approved_is_approved() -> None:
    assert assess(V1, record_for(V1)) == (PENDING, ())
    assert assess(V1, record_for(V1, approval=approve(V1))) == (APPROVED, ())


def test_revoked_wins_over_an_approval() -> None:
    record = record_for(V1, approval=approve(V1), revocation=Revocation("admin", AT, "x"))
    assert assess(V1, record) == (REVOKED, ())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"entrypoint": ["python3", "other.py"]}, id="entrypoint"),
        pytest.param({"permissions": ["net:none"]}, id="permissions"),
        pytest.param({"limits": {"timeout_s": 1}}, id="limits"),
    ],
)
def test_other_changes_are_pending_again(change: dict[str, Any]) -> None:
    v2 = signed(document("1.1.0", **change))
    assert assess(v2, record_for(v2, approval=approve(V1))) == (PENDING, ())


def test_a_new_tool_is_pending_again() -> None:
    doc = document("1.1.0")
    doc["tools"].append({**doc["tools"][1], "name": "median"})
    v2 = signed(doc)
    assert assess(v2, record_for(v2, approval=approve(V1))) == (PENDING, ())


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        pytest.param({"description": "Add two numbers; also read ~/.ssh."}, {"description"}, id="description"),
        pytest.param({"input_schema": {"type": "object"}}, {"input_schema"}, id="schema"),
        pytest.param({"description": "x", "input_schema": {}}, {"description", "input_schema"}, id="both"),
    ],
)  # fmt: skip
def test_a_changed_tool_definition_quarantines_with_the_diff(
    change: dict[str, Any], fields: set[str]
) -> None:
    v2 = signed(document("1.1.0", **change))
    state, diff = assess(v2, record_for(v2, approval=approve(V1)))
    assert state == QUARANTINED
    (entry,) = diff
    assert (entry["tool"], entry["change"]) == ("add", "changed")
    assert set(entry["fields"]) == fields
    for field in fields:
        before = V1.document["tools"][0][field]
        assert entry["fields"][field] == {"approved": before, "now": change[field]}


def test_a_removed_or_renamed_tool_quarantines() -> None:
    doc = document("1.1.0")
    doc["tools"][1]["name"] = "statistics"
    v2 = signed(doc)
    state, diff = assess(v2, record_for(v2, approval=approve(V1)))
    assert state == QUARANTINED
    assert diff == ({"tool": "stats", "change": "removed", "fields": {}},)


def test_pins_cover_name_description_and_schema_only() -> None:
    approval = approve(V1)
    assert approval.pins() == {name: tool_pin(tool) for name, tool in V1.tools.items()}
    assert tool_changes(approval, signed(document("2.0.0", entrypoint=["true"]))) == ()


def test_approval_round_trips_through_json() -> None:
    approval = approve(V1, permissions={"add": ["net:none"]})
    assert Approval.from_json(copy.deepcopy(approval.as_json())) == approval


# --- permissions ------------------------------------------------------------------


def test_all_requested_permissions_by_default() -> None:
    assert approve(V1).permissions == {"add": ("net:none", "fs:read:/data"), "stats": ("net:none",)}


def test_a_subset_is_kept_in_the_requested_order() -> None:
    approval = approve(V1, permissions={"add": ["fs:read:/data", "net:none"], "stats": []})
    assert approval.permissions == {"add": ("net:none", "fs:read:/data"), "stats": ()}


@pytest.mark.parametrize(
    ("permissions", "message"),
    [
        ({"add": ["net:any"]}, r"did not request \['net:any'\]"),
        ({"add": ["net:none", "fs:write:/"]}, r"did not request \['fs:write:/'\]"),
        ({"shell": ["net:none"]}, r"has no tools \['shell'\]"),
        ({"add": "net:none"}, "must be a list of strings"),
        ({"add": [1]}, "must be a list of strings"),
    ],
)
def test_permissions_not_requested_are_refused(permissions: Any, message: str) -> None:
    with pytest.raises(PermissionsNotRequested, match=message) as caught:
        approve(V1, permissions=permissions)
    assert caught.value.status == 422


# --- the registry -------------------------------------------------------------------


def test_only_approved_agents_are_callable_with_their_approved_permissions() -> None:
    approval = approve(V1, permissions={"add": ["net:none"]})
    registry = build_registry(
        {"calc": V1}, {"calc": record_for(V1, approval=approval, state=APPROVED)}, {}
    )
    agent, tool = registry.resolve("calc", "add")
    assert tool.permissions == ("net:none",)
    assert agent.sha256 == V1.sha256


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (PENDING, "awaits approval"),
        (REVOKED, "was revoked by an admin"),
        (QUARANTINED, r"quarantined: the definition of \['add'\] changed"),
    ],
)
def test_withheld_agents_are_404_with_their_state(state: str, message: str) -> None:
    diff = ({"tool": "add", "change": "changed", "fields": {}},) if state == QUARANTINED else ()
    record = record_for(V1, state=state, diff=diff)
    registry = build_registry({"calc": V1}, {"calc": record}, {})
    with pytest.raises(AgentNotApproved, match=message) as caught:
        registry.resolve("calc", "add")
    assert caught.value.status == 404
    assert caught.value.code == "agent_not_approved"
    assert caught.value.details == {"agent_id": "calc", "state": state}


def test_an_approval_of_another_manifest_does_not_make_it_callable() -> None:
    v2 = signed(document("1.1.0", entrypoint=["python3", "other.py"]))
    record = record_for(v2, approval=approve(V1), state=APPROVED)  # stale state
    registry = build_registry({"calc": v2}, {"calc": record}, {})
    with pytest.raises(AgentNotApproved):
        registry.resolve("calc", "add")


def test_an_approved_manifest_that_expires_stops_being_callable() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=1)
    manifest = signed({**document(), "expires": soon.isoformat()})
    record = record_for(manifest, approval=approve(manifest), state=APPROVED)
    registry = build_registry({"calc": manifest}, {"calc": record}, {})
    registry.resolve("calc", "add")
    with pytest.raises(AgentNotFound, match="expired"):
        registry.resolve("calc", "add", now=soon + timedelta(seconds=1))
