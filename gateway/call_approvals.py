"""Approvals of calls: a call policy answers `require_approval` waits for an admin.

    park     the call is parked: `pending`, bound to the caller (iss + sub), the agent
             and the sha256 of its manifest, the tool and the digest of the arguments
    decide   an admin approves or denies it, with a reason       -> `approved` / `denied`
    redeem   the caller replays the same call with the approval id; policy is asked
             again, and if it still says `require_approval` the approval is spent
             (`used`, atomically: of two replays exactly one runs) and the call runs
    expire   past `expires_at` an approval that is pending or approved is `expired`,
             which is a deny; it is recorded as such when first observed

Every step is one audit record of kind `call_approval` whose decision id is the
approval id (so `regate audit` shows an approval's history together), with the
actor: the caller for park and use, the admin for decisions, `regate` for expiry.
Not to be confused with the approval of *manifests* (gateway/approvals.py).
The admin API and the console call `list`, `get`, `approve` and `deny` below.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.audit import AuditStore
from gateway.call_approval_store import STATUSES, CallApproval, CallApprovalStore
from gateway.errors import (
    CallApprovalDecided,
    CallApprovalDenied,
    CallApprovalExpired,
    CallApprovalMismatch,
    CallApprovalNotFound,
    CallApprovalUndecided,
    CallApprovalUsed,
    TooManyPendingApprovals,
)
from regate.errors import BadRequest

AUDIT_KIND = "call_approval"
SYSTEM_ACTOR = "regate"
MAX_REASON_CHARS = 1000
APPROVAL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _now() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    """One fixed RFC 3339 form, so stored times also compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_approval_id(value: str) -> str:
    """The approval id a caller sent with a replay, or a 400 saying what one looks like."""
    text = value.strip().lower()
    if not APPROVAL_ID.match(text):
        raise BadRequest(
            'the approval id must be the "approval_id" of the 202 that parked the call'
            " (a UUID such as 2f1c0b7e-4d0a-4c3e-9a57-0c6f1b2a3d4e)"
        )
    return text


@dataclass(frozen=True)
class Binding:
    """What an approval is for: a replay must match every field to run."""

    caller_iss: str
    caller_sub: str
    agent_id: str
    manifest_sha256: str
    tool: str
    arguments_sha256: str

    def same_caller(self, approval: CallApproval) -> bool:
        return (self.caller_iss, self.caller_sub) == (approval.caller_iss, approval.caller_sub)

    def differences(self, approval: CallApproval) -> list[str]:
        """Names of what differs between this call and the approved one (never values)."""
        pairs = {
            "agent_id": (self.agent_id, approval.agent_id),
            "manifest_sha256": (self.manifest_sha256, approval.manifest_sha256),
            "tool": (self.tool, approval.tool),
            "arguments": (self.arguments_sha256, approval.arguments_sha256),
        }
        return [name for name, (now, then) in pairs.items() if now != then]


class CallApprovals:
    """The rules of call approvals over their store, each step audited."""

    def __init__(
        self,
        store: CallApprovalStore,
        audit: AuditStore,
        *,
        ttl_s: int,
        max_pending_per_caller: int,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.store = store
        self.audit = audit
        self.ttl_s = ttl_s
        self.max_pending_per_caller = max_pending_per_caller
        self.now = now
        # Parkings, decisions and redemptions one at a time in this process; the
        # store's conditional updates keep them exclusive across processes too.
        self._lock = asyncio.Lock()

    # --- the caller's side ---------------------------------------------------

    async def park(
        self,
        *,
        decision_id: str,
        binding: Binding,
        agent_version: str,
        masked_arguments: Mapping[str, Any],
        reasons: Sequence[Mapping[str, str]],
    ) -> CallApproval:
        """Park a call policy sent for approval; the record is durable before it returns."""
        async with self._lock:  # the count and the insert together: the cap holds
            created = self.now()
            pending = await self.store.count_pending(
                binding.caller_iss, binding.caller_sub, stamp(created)
            )
            if pending >= self.max_pending_per_caller:
                raise TooManyPendingApprovals(
                    f"caller {binding.caller_sub!r} already has {pending} calls waiting for an"
                    " admin's approval; wait for those to be decided or to expire",
                    headers={"Retry-After": "60"},
                )
            approval = CallApproval(
                approval_id=str(uuid.uuid4()),
                decision_id=decision_id,
                caller_iss=binding.caller_iss,
                caller_sub=binding.caller_sub,
                agent_id=binding.agent_id,
                agent_version=agent_version,
                manifest_sha256=binding.manifest_sha256,
                tool=binding.tool,
                arguments_sha256=binding.arguments_sha256,
                arguments=dict(masked_arguments),
                reasons=tuple(dict(r) for r in reasons),
                status="pending",
                created_at=stamp(created),
                expires_at=stamp(created + timedelta(seconds=self.ttl_s)),
            )
            # Audited first: an approval never exists unlogged.
            await self._audit("parked", approval, actor=binding.caller_sub)
            await self.store.insert(approval)
            return approval

    async def for_caller(self, approval_id: str, caller_iss: str, caller_sub: str) -> CallApproval:
        """The caller's own approval; another caller's is as unknown as a missing one."""
        approval = await self.get(approval_id)
        if (approval.caller_iss, approval.caller_sub) != (caller_iss, caller_sub):
            raise _not_found(approval_id)
        return approval

    async def redeem(self, approval_id: str, binding: Binding, decision_id: str) -> CallApproval:
        """Spend an approval on the replay `decision_id`, or raise why it cannot run."""
        async with self._lock:
            approval = await self._observed(approval_id)
            if not binding.same_caller(approval):
                raise _not_found(approval_id)
            differences = binding.differences(approval)
            if differences:
                raise CallApprovalMismatch(
                    f"approval {approval_id} is for another call: {', '.join(differences)}"
                    " differ from the call that was approved; replay exactly the parked call",
                    approval_id=approval_id,
                    mismatched=differences,
                )
            refuse_unless_approved(approval)
            now = stamp(self.now())
            used = await self.store.transition(
                approval_id,
                from_statuses=("approved",),
                to=replace(approval, status="used", used_at=now, used_by_decision=decision_id),
                unexpired_at=now,
            )
            if used is None:  # it moved on in another process: say how it is now
                refuse_unless_approved(await self._observed(approval_id))
                raise CallApprovalUsed(f"approval {approval_id} was used", approval_id=approval_id)
            try:
                await self._audit("used", used, actor=binding.caller_sub, decision_id=decision_id)
            except BaseException:
                # Unrecorded, so unspent: the call will not run (the log refused it), and
                # the caller may replay once the log takes writes again.
                await self.store.transition(approval_id, from_statuses=("used",), to=approval)
                raise
            return used

    # --- the admin's side (the admin API and the console) ---------------------

    async def list(self, status: str | None = None, limit: int = 100) -> list[CallApproval]:
        """Newest first; `status` one of pending, approved, denied, expired, used."""
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {list(STATUSES)}, not {status[:40]!r}")
        approvals = [await self._observe(a) for a in await self.store.recent(status, limit)]
        # One that expired since it was last looked at is no longer `pending`.
        return [a for a in approvals if status is None or a.status == status]

    async def get(self, approval_id: str) -> CallApproval:
        return await self._observed(approval_id)

    async def approve(self, approval_id: str, actor: str, reason: str) -> CallApproval:
        return await self._decide(approval_id, "approved", actor, reason)

    async def deny(self, approval_id: str, actor: str, reason: str) -> CallApproval:
        return await self._decide(approval_id, "denied", actor, reason)

    async def _decide(self, approval_id: str, status: str, actor: str, reason: str) -> CallApproval:
        if not actor:
            raise BadRequest("an approval decision needs the acting admin's identity")
        reason = reason.strip() if isinstance(reason, str) else ""
        if not reason or len(reason) > MAX_REASON_CHARS:
            raise BadRequest(
                f"give a reason (1 to {MAX_REASON_CHARS} characters): it is shown to the"
                " caller and kept in the audit log"
            )
        async with self._lock:
            approval = await self._observed(approval_id)
            if approval.status != "pending":
                raise CallApprovalDecided(
                    f"approval {approval_id} is {approval.status}, not pending: it can no"
                    " longer be approved or denied",
                    approval_id=approval_id,
                    status=approval.status,
                )
            decided = replace(
                approval,
                status=status,
                decided_by=actor,
                decided_at=stamp(self.now()),
                decision_reason=reason,
            )
            # Audited first: a decision never takes effect unlogged.
            await self._audit(status, decided, actor=actor, reason=reason)
            stored = await self.store.transition(
                approval_id, from_statuses=("pending",), to=decided
            )
            if stored is None:
                now = await self._observed(approval_id)
                raise CallApprovalDecided(
                    f"approval {approval_id} became {now.status} meanwhile",
                    approval_id=approval_id,
                    status=now.status,
                )
            return stored

    # --- expiry ---------------------------------------------------------------

    async def _observed(self, approval_id: str) -> CallApproval:
        approval = await self.store.get(approval_id) if APPROVAL_ID.match(approval_id) else None
        if approval is None:
            raise _not_found(approval_id)
        return await self._observe(approval)

    async def _observe(self, approval: CallApproval) -> CallApproval:
        """The approval as it is now: one past its expiry becomes `expired` (and audited)."""
        live = approval.status in ("pending", "approved")
        if not live or stamp(self.now()) < approval.expires_at:
            return approval
        expired = await self.store.transition(
            approval.approval_id,
            from_statuses=("pending", "approved"),
            to=replace(approval, status="expired"),
        )
        if expired is None:  # someone else moved it first
            again = await self.store.get(approval.approval_id)
            return again or approval
        await self._audit("expired", expired, actor=SYSTEM_ACTOR, was=approval.status)
        return expired

    async def _audit(self, event: str, approval: CallApproval, *, actor: str, **extra: Any) -> None:
        body = {
            "event": event,
            "approval_id": approval.approval_id,
            "actor": actor,
            "at": stamp(self.now()),
            "status": approval.status,
            "caller": {"iss": approval.caller_iss, "sub": approval.caller_sub},
            "target": {
                "agent_id": approval.agent_id,
                "version": approval.agent_version,
                "manifest_sha256": approval.manifest_sha256,
            },
            "tool": approval.tool,
            "arguments_sha256": approval.arguments_sha256,
            "parked_decision_id": approval.decision_id,
            "expires_at": approval.expires_at,
            **extra,
        }
        if event == "parked":
            body["arguments"] = dict(approval.arguments)  # masked as in the decision log
            body["reasons"] = [dict(r) for r in approval.reasons]
        await self.audit.append(AUDIT_KIND, approval.approval_id, body)


def refuse_unless_approved(approval: CallApproval) -> None:
    """Raise the replay's refusal for any status but `approved`."""
    approval_id = approval.approval_id
    if approval.status == "approved":
        return
    if approval.status == "pending":
        raise CallApprovalUndecided(
            f"approval {approval_id} is still pending: no admin has decided yet; poll"
            f" GET /v1/approvals/{approval_id} and replay once it is approved",
            approval_id=approval_id,
            expires_at=approval.expires_at,
        )
    if approval.status == "denied":
        raise CallApprovalDenied(
            f"approval {approval_id} was denied: {approval.decision_reason}",
            approval_id=approval_id,
            reason=approval.decision_reason,
        )
    if approval.status == "expired":
        raise CallApprovalExpired(
            f"approval {approval_id} expired at {approval.expires_at} before its call ran;"
            " make the call again to ask for a new approval",
            approval_id=approval_id,
            expires_at=approval.expires_at,
        )
    raise CallApprovalUsed(
        f"approval {approval_id} was already used: an approved call runs once; make the"
        " call again to ask for a new approval",
        approval_id=approval_id,
        used_at=approval.used_at,
    )


def _not_found(approval_id: str) -> CallApprovalNotFound:
    return CallApprovalNotFound(
        f"no approval {approval_id[:64]!r} for this caller; use the approval_id of the"
        " 202 that parked your call"
    )


# --- views ---------------------------------------------------------------------


def caller_view(approval: CallApproval) -> dict[str, Any]:
    """What `GET /v1/approvals/{id}` shows the caller (not who decided: that is the
    admins' business; the reason is for the caller)."""
    return {
        "approval_id": approval.approval_id,
        "status": approval.status,
        "decision_id": approval.decision_id,
        "agent_id": approval.agent_id,
        "tool": approval.tool,
        "arguments_sha256": approval.arguments_sha256,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_at": approval.decided_at,
        "reason": approval.decision_reason,
        "used_at": approval.used_at,
    }


def admin_view(approval: CallApproval) -> dict[str, Any]:
    """Everything, for admins: the masked arguments and the policy's reasons too."""
    return {
        "approval_id": approval.approval_id,
        "status": approval.status,
        "decision_id": approval.decision_id,
        "caller": {"iss": approval.caller_iss, "sub": approval.caller_sub},
        "target": {
            "agent_id": approval.agent_id,
            "version": approval.agent_version,
            "manifest_sha256": approval.manifest_sha256,
        },
        "tool": approval.tool,
        "arguments": dict(approval.arguments),
        "arguments_sha256": approval.arguments_sha256,
        "reasons": [dict(r) for r in approval.reasons],
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_by": approval.decided_by,
        "decided_at": approval.decided_at,
        "reason": approval.decision_reason,
        "used_at": approval.used_at,
        "used_by_decision_id": approval.used_by_decision,
    }
