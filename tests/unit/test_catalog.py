"""The catalog (`gateway.catalog`): manifests on disk, their approvals, reloads and audit.

Real files, a real SQLite approval store and audit store in a temp dir; no sockets.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.approvals import ApprovalStore
from gateway.audit import AuditStore
from gateway.catalog import Catalog, fingerprint
from gateway.errors import AgentNotApproved, NoVerifiedManifest, UnknownAgent
from regate import crypto
from regate.manifest import sign_manifest
from regate.settings import ManifestSettings

T = TypeVar("T")


def document(agent_id: str = "calc", version: str = "1.0.0", description: str = "Add.") -> Any:
    return {
        "agent_id": agent_id,
        "version": version,
        "tools": [
            {
                "name": "add",
                "description": description,
                "input_schema": {"type": "object"},
                "entrypoint": ["python3", "add.py"],
            }
        ],
    }


class World:
    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.key = crypto.load_private_key(crypto.write_key_pair(root / "keys", "pub")[0])
        (root / "manifests").mkdir()
        self.settings = ManifestSettings(
            dir=root / "manifests", publishers_jwks=root / "keys" / "pub.jwks.json", **settings
        )

    def publish(self, doc: Any, key: crypto.Jwk | None = None) -> None:
        (self.root / "manifests" / f"{doc['agent_id']}.jws").write_text(
            sign_manifest(doc, key or self.key)
        )

    def run(self, scenario: Callable[[Catalog], Awaitable[T]]) -> T:
        async def main() -> T:
            audit = AuditStore(self.root / "audit.sqlite3")
            store = ApprovalStore(self.root / "approvals.sqlite3")
            catalog = Catalog(self.settings, store, audit)
            try:
                await catalog.start()
                return await scenario(catalog)
            finally:
                await store.close()
                await audit.close()

        return asyncio.run(main())

    def audit(self) -> list[tuple[str, dict[str, Any]]]:
        conn = sqlite3.connect(self.root / "audit.sqlite3")
        try:
            rows = conn.execute("SELECT kind, body FROM audit_log ORDER BY seq").fetchall()
        finally:
            conn.close()
        return [(kind, json.loads(body)) for kind, body in rows]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_new_manifest_is_pending_and_recorded(world: World) -> None:
    world.publish(document())

    async def scenario(catalog: Catalog) -> None:
        assert catalog.registry.agents == {}
        with pytest.raises(AgentNotApproved, match="awaits approval"):
            catalog.registry.resolve("calc", "add")
        (entry,) = catalog.entries()
        assert entry.record is not None
        assert entry.record.state == "pending"

    world.run(scenario)
    ((kind, body),) = world.audit()
    assert kind == "manifest"
    assert (body["event"], body["actor"], body["to_state"]) == (
        "manifest_seen",
        "regate",
        "pending",
    )


def test_approval_survives_a_restart_and_listeners_hear_of_it(world: World) -> None:
    world.publish(document())
    heard: list[Any] = []

    async def approve(catalog: Catalog) -> None:
        catalog.on_change(heard.append)
        await catalog.approve("calc", actor="alice", reason="reviewed")
        catalog.registry.resolve("calc", "add")

    world.run(approve)
    assert list(heard[-1].agents) == ["calc"]

    async def after_restart(catalog: Catalog) -> None:
        catalog.registry.resolve("calc", "add")
        record = catalog.entry("calc").record
        assert record is not None
        assert record.approval is not None
        assert (record.approval.by, record.approval.reason) == ("alice", "reviewed")

    world.run(after_restart)
    admin = [body for kind, body in world.audit() if kind == "admin"]
    assert [(b["action"], b["actor"], b["outcome"]) for b in admin] == [
        ("approve", "alice", "done")
    ]


def test_a_rollback_after_a_restart_is_still_refused(world: World) -> None:
    world.publish(document(version="2.0.0"))
    world.run(lambda catalog: catalog.approve("calc", actor="alice"))
    world.publish(document(version="1.0.0"))

    async def scenario(catalog: Catalog) -> None:
        assert "lower than 2.0.0" in catalog.refused["calc.jws"]
        with pytest.raises(NoVerifiedManifest, match=r"lower than 2\.0\.0"):
            await catalog.approve("calc", actor="alice")

    world.run(scenario)
    refused = [b for k, b in world.audit() if b.get("event") == "manifest_refused"]
    assert [b["file"] for b in refused] == ["calc.jws"]


def test_auto_approve_approves_pending_but_never_a_quarantine(tmp_path: Path) -> None:
    world = World(tmp_path, auto_approve=True)
    world.publish(document())

    async def scenario(catalog: Catalog) -> None:
        catalog.registry.resolve("calc", "add")
        world.publish(document(version="1.1.0", description="Add; and more."))
        await catalog.reload()
        with pytest.raises(AgentNotApproved, match="quarantined"):
            catalog.registry.resolve("calc", "add")

    world.run(scenario)
    admin = [b for k, b in world.audit() if k == "admin"]
    assert [(b["action"], b["actor"]) for b in admin] == [("approve", "auto-approve")]


def test_revoked_kids_are_refused(tmp_path: Path) -> None:
    world = World(tmp_path, revoked_kids=("pub",))
    world.publish(document())

    async def scenario(catalog: Catalog) -> None:
        assert "revoked" in catalog.refused["calc.jws"]
        with pytest.raises(NoVerifiedManifest):
            await catalog.approve("calc", actor="alice")

    world.run(scenario)


def test_an_unreadable_trust_store_keeps_what_holds(world: World) -> None:
    world.publish(document())

    async def scenario(catalog: Catalog) -> None:
        await catalog.approve("calc", actor="alice")
        world.settings.publishers_jwks.write_text("{half a file")
        await catalog.reload()
        catalog.registry.resolve("calc", "add")  # still callable

    world.run(scenario)


def test_the_gateway_does_not_start_without_its_trust_store(world: World) -> None:
    world.settings.publishers_jwks.unlink()
    with pytest.raises(crypto.CryptoError):
        world.run(lambda catalog: asyncio.sleep(0))


def test_unknown_agents_are_404(world: World) -> None:
    async def scenario(catalog: Catalog) -> None:
        with pytest.raises(UnknownAgent):
            await catalog.approve("ghost", actor="alice")
        with pytest.raises(UnknownAgent):
            await catalog.revoke("ghost", actor="alice")
        with pytest.raises(UnknownAgent):
            catalog.entry("ghost")

    world.run(scenario)
    refused = [b for k, b in world.audit() if k == "admin"]
    assert [(b["action"], b["outcome"], b["code"]) for b in refused] == [
        ("approve", "refused", "agent_not_found"),
        ("revoke", "refused", "agent_not_found"),
    ]


def test_fingerprint_changes_with_any_manifest_or_the_trust_store(world: World) -> None:
    before = fingerprint(world.settings)
    world.publish(document())
    after_publish = fingerprint(world.settings)
    assert after_publish != before
    (world.root / "manifests" / "calc.jws").unlink()
    assert fingerprint(world.settings) == before
    world.settings.publishers_jwks.write_text(world.settings.publishers_jwks.read_text() + " ")
    assert fingerprint(world.settings) != before


def test_the_watcher_reloads_on_change(tmp_path: Path) -> None:
    world = World(tmp_path, reload_interval_s=0.05)

    async def scenario(catalog: Catalog) -> None:
        watcher = asyncio.create_task(catalog.watch())
        try:
            world.publish(document())
            for _ in range(100):
                if catalog.entries():
                    break
                await asyncio.sleep(0.02)
            assert [e.agent_id for e in catalog.entries()] == ["calc"]
        finally:
            watcher.cancel()

    world.run(scenario)
