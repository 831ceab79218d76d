"""Where parked calls are remembered: `<state_dir>/call_approvals.sqlite3`.

One row per call that policy sent for an admin's approval (gateway/call_approvals.py
holds the rules; this is only storage). Not to be confused with approvals.sqlite3,
which holds the approvals of *manifests* (gateway/approvals.py). Status changes are
conditional updates (`... WHERE status IN (...)`), so that of two concurrent
replays of one approved call exactly one turns it `used`, even across processes
sharing the file. The history of every change is in the audit log; this is the
current state. The file is created 0600, like the other stores of the state dir.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from gateway.state_db import connect_private

T = TypeVar("T")
FILE_NAME = "call_approvals.sqlite3"
STATUSES = ("pending", "approved", "denied", "expired", "used")
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS call_approvals (
    approval_id       TEXT PRIMARY KEY,
    decision_id       TEXT NOT NULL,
    caller_iss        TEXT NOT NULL,
    caller_sub        TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    manifest_sha256   TEXT NOT NULL,
    tool              TEXT NOT NULL,
    arguments_sha256  TEXT NOT NULL,
    arguments         TEXT NOT NULL,
    reasons           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    created_at        TEXT NOT NULL,
    expires_at        TEXT NOT NULL,
    decided_by        TEXT,
    decided_at        TEXT,
    decision_reason   TEXT,
    used_at           TEXT,
    used_by_decision  TEXT
);
CREATE INDEX IF NOT EXISTS call_approvals_status ON call_approvals (status, created_at);
CREATE INDEX IF NOT EXISTS call_approvals_caller ON call_approvals (caller_iss, caller_sub, status);
"""


@dataclass(frozen=True)
class CallApproval:
    """One parked call. Times are RFC 3339 UTC strings of one fixed format, so that
    they compare as strings too. `arguments` are masked as the decision log masks them
    (policy `redact` obligations); `arguments_sha256` is over the real ones."""

    approval_id: str
    decision_id: str  # of the call that was parked
    caller_iss: str
    caller_sub: str
    agent_id: str
    agent_version: str
    manifest_sha256: str
    tool: str
    arguments_sha256: str
    arguments: Mapping[str, Any]
    reasons: tuple[Mapping[str, str], ...]
    status: str
    created_at: str
    expires_at: str
    decided_by: str | None = None
    decided_at: str | None = None
    decision_reason: str | None = None
    used_at: str | None = None
    used_by_decision: str | None = None  # decision id of the replay that ran


COLUMNS = tuple(f.name for f in fields(CallApproval))
# What a status change may set; the binding and the call's facts never change.
CHANGING = ("status", "decided_by", "decided_at", "decision_reason", "used_at", "used_by_decision")


def _row(values: tuple[Any, ...]) -> CallApproval:
    row = dict(zip(COLUMNS, values, strict=True))
    row["arguments"] = json.loads(row["arguments"])
    row["reasons"] = tuple(json.loads(row["reasons"]))
    return CallApproval(**row)


def _values(approval: CallApproval) -> tuple[Any, ...]:
    row = {name: getattr(approval, name) for name in COLUMNS}
    row["arguments"] = json.dumps(dict(approval.arguments))
    row["reasons"] = json.dumps([dict(r) for r in approval.reasons])
    return tuple(row[name] for name in COLUMNS)


class CallApprovalStore:
    """Async front of the table; one thread owns the connection, as for the audit store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect_private(path, SCHEMA)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="call-approvals")

    async def insert(self, approval: CallApproval) -> None:
        await self._run(self._insert, approval)

    async def get(self, approval_id: str) -> CallApproval | None:
        return await self._run(self._get, approval_id)

    async def recent(self, status: str | None = None, limit: int = 100) -> list[CallApproval]:
        """Newest first."""
        return await self._run(self._recent, status, limit)

    async def count_pending(self, caller_iss: str, caller_sub: str, now: str) -> int:
        """The caller's pending approvals that expire after `now`."""
        return await self._run(self._count_pending, caller_iss, caller_sub, now)

    async def transition(
        self,
        approval_id: str,
        *,
        from_statuses: Collection[str],
        to: CallApproval,
        unexpired_at: str | None = None,
    ) -> CallApproval | None:
        """Store `to` (same id, new status and fields) only if the row's status is still
        one of `from_statuses` (and, with `unexpired_at`, it expires after that time).
        Returns `to` when it was stored, None when the row had moved on."""
        return await self._run(self._transition, approval_id, from_statuses, to, unexpired_at)

    async def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._conn.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, fn, *args)

    def _insert(self, approval: CallApproval) -> None:
        marks = ", ".join("?" for _ in COLUMNS)
        self._conn.execute(
            f"INSERT INTO call_approvals ({', '.join(COLUMNS)}) VALUES ({marks})",  # noqa: S608
            _values(approval),
        )

    def _get(self, approval_id: str) -> CallApproval | None:
        row = self._conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM call_approvals WHERE approval_id = ?",  # noqa: S608
            (approval_id,),
        ).fetchone()
        return _row(row) if row else None

    def _recent(self, status: str | None, limit: int) -> list[CallApproval]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM call_approvals {where}"  # noqa: S608
            " ORDER BY created_at DESC, approval_id LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def _count_pending(self, caller_iss: str, caller_sub: str, now: str) -> int:
        (count,) = self._conn.execute(
            "SELECT count(*) FROM call_approvals WHERE caller_iss = ? AND caller_sub = ?"
            " AND status = 'pending' AND expires_at > ?",
            (caller_iss, caller_sub, now),
        ).fetchone()
        return int(count)

    def _transition(
        self,
        approval_id: str,
        from_statuses: Collection[str],
        to: CallApproval,
        unexpired_at: str | None,
    ) -> CallApproval | None:
        changing = CHANGING
        to = replace(to, approval_id=approval_id)
        sets = ", ".join(f"{name} = ?" for name in changing)
        marks = ", ".join("?" for _ in from_statuses)
        sql = f"UPDATE call_approvals SET {sets} WHERE approval_id = ? AND status IN ({marks})"  # noqa: S608
        params: list[Any] = [getattr(to, name) for name in changing]
        params += [approval_id, *from_statuses]
        if unexpired_at is not None:
            sql += " AND expires_at > ?"
            params.append(unexpired_at)
        cursor = self._conn.execute(sql, params)
        return to if cursor.rowcount == 1 else None
