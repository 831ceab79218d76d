"""The agents the gateway knows, kept current: signed manifests on disk and their approvals.

At start, and whenever a `*.jws` in `[manifests] dir` or the publisher trust store
changes (a `stat` of each file every `reload_interval_s`), or a loaded manifest
expires, the catalog verifies every manifest again, refuses any whose version
goes backwards, works out each agent's state (gateway/lifecycle.py), records what
changed in the audit log, and hands a fresh `AgentRegistry` to the pipeline.
Approvals and revocations by admins come through here too, one at a time, each
audited with its actor before it takes effect.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from gateway.agents import AgentRegistry, build_registry
from gateway.approvals import ApprovalStore
from gateway.audit import AuditStore
from gateway.errors import ManifestChanged, NoVerifiedManifest, UnknownAgent
from gateway.lifecycle import (
    APPROVED,
    PENDING,
    REVOKED,
    AgentRecord,
    Revocation,
    assess,
    check_version,
    make_approval,
)
from regate import crypto
from regate.errors import RegateError
from regate.manifest import ManifestError, SignedManifest
from regate.manifest_dir import load_manifest_dir
from regate.settings import ManifestSettings

log = structlog.get_logger("regate.manifests")

AUTO_APPROVER = "auto-approve"
SYSTEM_ACTOR = "regate"
Fingerprint = tuple[tuple[str, int, int, int], ...]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Entry:
    """One agent as the admin API shows it."""

    agent_id: str
    manifest: SignedManifest | None  # None: no manifest verifies for it right now
    record: AgentRecord | None  # None: never seen with a valid manifest
    refused: str | None  # why its `<agent_id>.jws` was refused, if it was


class Catalog:
    def __init__(
        self,
        settings: ManifestSettings,
        store: ApprovalStore,
        audit: AuditStore,
        *,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.now = now
        self.registry = AgentRegistry(agents={})
        self._manifests: dict[str, SignedManifest] = {}
        self._records: dict[str, AgentRecord] = {}
        self._refused: dict[str, str] = {}
        self._fingerprint: Fingerprint | None = None
        self._next_expiry: datetime | None = None
        self._listeners: list[Callable[[AgentRegistry], None]] = []
        self._lock = asyncio.Lock()

    def on_change(self, listener: Callable[[AgentRegistry], None]) -> None:
        self._listeners.append(listener)

    # --- loading ------------------------------------------------------------

    async def start(self) -> None:
        """Read what the store remembers, then load every manifest (raises if the trust
        store cannot be read: the gateway does not start without it)."""
        self._records = await self.store.all()
        await self.reload()

    async def reload(self) -> None:
        """Verify every manifest again and bring every agent's state up to date."""
        async with self._lock:
            await self._reload()

    async def watch(self) -> None:
        """Reload when a manifest file or the trust store changes, or a manifest expires."""
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                expired = self._next_expiry is not None and self.now() >= self._next_expiry
                if expired or fingerprint(self.settings) != self._fingerprint:
                    await self.reload()
            except Exception:
                log.exception("manifest_reload_failed")

    async def _reload(self) -> None:
        seen = fingerprint(self.settings)
        try:
            keys = crypto.load_jwks(self.settings.publishers_jwks)
        except crypto.CryptoError as exc:
            if self._fingerprint is None:
                raise  # at start: the gateway does not start without its trust store
            # A half-written file must not make every agent vanish: keep what holds,
            # and try again when the file changes.
            log.error("publishers_unreadable", reason=str(exc), action="kept the previous state")
            self._fingerprint = seen
            return
        verified, refused = await asyncio.to_thread(
            load_manifest_dir, self.settings.dir, keys, self.settings.revoked_kids
        )
        manifests: dict[str, SignedManifest] = {}
        for agent_id, manifest in verified.items():
            record = self._records.get(agent_id)
            try:
                check_version(manifest, record)
            except ManifestError as exc:
                refused[f"{agent_id}.jws"] = str(exc)
                log.warning("manifest_refused", file=f"{agent_id}.jws", reason=str(exc))
                continue
            manifests[agent_id] = manifest
            await self._settle(manifest, record)
        for name, reason in sorted(refused.items()):
            if self._refused.get(name) != reason:
                await self._event({"event": "manifest_refused", "file": name, "reason": reason})
        self._manifests, self._refused, self._fingerprint = manifests, refused, seen
        expiries = [m.expires for m in manifests.values() if m.expires is not None]
        self._next_expiry = min(expiries) if expiries else None
        self._publish()

    async def _settle(self, manifest: SignedManifest, record: AgentRecord | None) -> None:
        """Record a verified manifest and the state it puts its agent in."""
        at = self.now().isoformat()
        current = record or AgentRecord(
            agent_id=manifest.agent_id,
            highest_version=manifest.version,
            highest_sha256=manifest.sha256,
            first_seen_at=at,
            state=PENDING,
        )
        # check_version let it through: it is the highest version seen, or the same one.
        current = current.replace(highest_version=manifest.version, highest_sha256=manifest.sha256)
        state, diff = assess(manifest, current)
        current = current.replace(state=state, diff=diff)
        if record is None or (record.state, record.highest_sha256, record.diff) != (
            current.state,
            current.highest_sha256,
            current.diff,
        ):
            await self._event(
                {
                    "event": "manifest_seen" if record is None else "manifest_changed",
                    **_target(manifest),
                    "from_state": record.state if record else None,
                    "to_state": state,
                    "diff": list(diff),
                }
            )
        if state == PENDING and self.settings.auto_approve:
            approval = make_approval(
                manifest,
                by=AUTO_APPROVER,
                at=at,
                reason="[manifests] auto_approve = true (a development setting)",
            )
            log.warning(
                "manifest_auto_approved",
                agent_id=manifest.agent_id,
                version=manifest.version,
                manifest_sha256=manifest.sha256,
                note="auto_approve is for tests and demos only; never enable it in production",
            )
            await self._admin_record(
                "approve", AUTO_APPROVER, manifest.agent_id, None, {**_target(manifest)}
            )
            current = current.replace(approval=approval, state=APPROVED, diff=())
        if current != record:
            await self.store.put(current)
        self._records[manifest.agent_id] = current

    # --- admin actions ------------------------------------------------------

    async def approve(
        self,
        agent_id: str,
        *,
        actor: str,
        reason: str = "",
        permissions: Mapping[str, Sequence[str]] | None = None,
        expect_sha256: str | None = None,
        request_id: str | None = None,
    ) -> tuple[str, Entry]:
        """Approve the agent's current manifest; return the audit action id and the agent."""
        async with self._lock:
            action: dict[str, Any] = {
                "reason": reason,
                "requested_permissions": dict(permissions) if permissions is not None else None,
                "expected_sha256": expect_sha256,
            }
            try:
                manifest = self._current(agent_id)
                action.update(_target(manifest))
                if expect_sha256 is not None and expect_sha256 != manifest.sha256:
                    raise ManifestChanged(
                        f"agent {agent_id!r} now serves manifest {manifest.sha256}, not"
                        f" {expect_sha256}; review it again before approving",
                        manifest_sha256=manifest.sha256,
                    )
                approval = make_approval(
                    manifest,
                    by=actor,
                    at=self.now().isoformat(),
                    reason=reason,
                    permissions=permissions,
                )
            except RegateError as exc:
                await self._admin_record("approve", actor, agent_id, exc, action, request_id)
                raise
            action["permissions"] = {n: list(p) for n, p in approval.permissions.items()}
            action_id = await self._admin_record(
                "approve", actor, agent_id, None, action, request_id
            )
            record = self._records[agent_id].replace(
                approval=approval, revocation=None, state=APPROVED, diff=()
            )
            await self.store.put(record)
            self._records[agent_id] = record
            self._publish()
            log.info("agent_approved", agent_id=agent_id, actor=actor, sha256=manifest.sha256)
            return action_id, self._entry(agent_id)

    async def revoke(
        self, agent_id: str, *, actor: str, reason: str = "", request_id: str | None = None
    ) -> tuple[str, Entry]:
        async with self._lock:
            action: dict[str, Any] = {"reason": reason}
            record = self._records.get(agent_id)
            if record is None:
                exc = UnknownAgent(f"no agent {agent_id!r} has been seen", agent_id=agent_id)
                await self._admin_record("revoke", actor, agent_id, exc, action, request_id)
                raise exc
            manifest = self._manifests.get(agent_id)
            if manifest is not None:
                action.update(_target(manifest))
            action_id = await self._admin_record(
                "revoke", actor, agent_id, None, action, request_id
            )
            revocation = Revocation(by=actor, at=self.now().isoformat(), reason=reason)
            record = record.replace(revocation=revocation, state=REVOKED, diff=())
            await self.store.put(record)
            self._records[agent_id] = record
            self._publish()
            log.info("agent_revoked", agent_id=agent_id, actor=actor)
            return action_id, self._entry(agent_id)

    # --- reading ------------------------------------------------------------

    def entries(self) -> list[Entry]:
        names = set(self._records) | set(self._manifests)
        names |= {n.removesuffix(".jws") for n in self._refused}
        return [self._entry(name) for name in sorted(names)]

    def entry(self, agent_id: str) -> Entry:
        if agent_id not in self._records and f"{agent_id}.jws" not in self._refused:
            raise UnknownAgent(
                f"no agent {agent_id!r}: no manifest for it has been seen", agent_id=agent_id
            )
        return self._entry(agent_id)

    @property
    def refused(self) -> Mapping[str, str]:
        return dict(self._refused)

    def _entry(self, agent_id: str) -> Entry:
        return Entry(
            agent_id=agent_id,
            manifest=self._manifests.get(agent_id),
            record=self._records.get(agent_id),
            refused=self._refused.get(f"{agent_id}.jws"),
        )

    def _current(self, agent_id: str) -> SignedManifest:
        manifest = self._manifests.get(agent_id)
        if manifest is not None:
            return manifest
        refused = self._refused.get(f"{agent_id}.jws")
        if refused is not None:
            raise NoVerifiedManifest(
                f"agent {agent_id!r} has no manifest that verifies: {refused}", agent_id=agent_id
            )
        if agent_id in self._records:
            raise NoVerifiedManifest(
                f"agent {agent_id!r} has no manifest file any more", agent_id=agent_id
            )
        raise UnknownAgent(
            f"no agent {agent_id!r}: no manifest for it has been seen", agent_id=agent_id
        )

    def _publish(self) -> None:
        self.registry = build_registry(self._manifests, self._records, self._refused)
        for listener in self._listeners:
            listener(self.registry)

    # --- the audit log --------------------------------------------------------

    async def _event(self, body: Mapping[str, Any]) -> None:
        """A change the gateway noticed by itself: recorded with actor `regate`."""
        record = {"actor": SYSTEM_ACTOR, "time": self.now().isoformat(), **body}
        await self.audit.append("manifest", str(uuid.uuid4()), record)

    async def _admin_record(
        self,
        action: str,
        actor: str,
        agent_id: str,
        error: RegateError | None,
        details: Mapping[str, Any],
        request_id: str | None = None,
    ) -> str:
        action_id = str(uuid.uuid4())
        body = {
            "action": action,
            "actor": actor,
            "agent_id": agent_id,
            "outcome": "refused" if error else "done",
            "status": error.status if error else 200,
            "code": error.code if error else "ok",
            "message": error.message if error else "",
            "request_id": request_id,
            "time": self.now().isoformat(),
            **details,
        }
        if error is not None:
            error.details["action_id"] = action_id
        await self.audit.append("admin", action_id, body)
        return action_id


def _target(manifest: SignedManifest) -> dict[str, Any]:
    return {
        "agent_id": manifest.agent_id,
        "version": manifest.version,
        "manifest_sha256": manifest.sha256,
        "publisher": manifest.publisher,
    }


def fingerprint(settings: ManifestSettings) -> Fingerprint:
    """What changes when a manifest file or the trust store is written, replaced or removed."""
    paths: list[Path] = [settings.publishers_jwks, *sorted(settings.dir.glob("*.jws"))]
    entries = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            entries.append((str(path), -1, -1, -1))
            continue
        entries.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(entries)
