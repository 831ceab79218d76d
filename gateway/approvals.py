"""Where the manifest lifecycle is remembered: `<state_dir>/approvals.sqlite3`.

One row per agent ever seen (gateway/lifecycle.py `AgentRecord`): the highest
version seen, the state, the current approval (who, when, why, the manifest's
sha256, the approved permissions, the pinned tool definitions), a revocation and
the quarantine diff. The history of every change is in the audit log; this is the
current state. The file is created 0600; whoever can write it can approve agents,
so it lives in the state dir with the audit store and the keys.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from gateway.lifecycle import STATES, AgentRecord, Approval, Revocation
from gateway.state_db import connect_private

FILE_NAME = "approvals.sqlite3"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS agents (
    agent_id         TEXT PRIMARY KEY,
    highest_version  TEXT NOT NULL,
    highest_sha256   TEXT NOT NULL,
    first_seen_at    TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in STATES)})),
    approval         TEXT,
    revocation       TEXT,
    diff             TEXT NOT NULL DEFAULT '[]',
    updated_at       TEXT NOT NULL
);
"""


class ApprovalStore:
    """Async front of the table; one writer thread, as for the audit store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect_private(path, SCHEMA)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="approvals")

    async def all(self) -> dict[str, AgentRecord]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._all)

    async def put(self, record: AgentRecord) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._put, record)

    async def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._conn.close()

    def _all(self) -> dict[str, AgentRecord]:
        rows = self._conn.execute(
            "SELECT agent_id, highest_version, highest_sha256, first_seen_at, state,"
            " approval, revocation, diff FROM agents ORDER BY agent_id"
        )
        records = {}
        for agent_id, version, sha, first_seen, state, approval, revocation, diff in rows:
            records[agent_id] = AgentRecord(
                agent_id=agent_id,
                highest_version=version,
                highest_sha256=sha,
                first_seen_at=first_seen,
                state=state,
                approval=Approval.from_json(json.loads(approval)) if approval else None,
                revocation=Revocation(**json.loads(revocation)) if revocation else None,
                diff=tuple(json.loads(diff)),
            )
        return records

    def _put(self, record: AgentRecord) -> None:
        self._conn.execute(
            "INSERT INTO agents (agent_id, highest_version, highest_sha256, first_seen_at,"
            " state, approval, revocation, diff, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (agent_id) DO UPDATE SET highest_version = excluded.highest_version,"
            " highest_sha256 = excluded.highest_sha256, state = excluded.state,"
            " approval = excluded.approval, revocation = excluded.revocation,"
            " diff = excluded.diff, updated_at = excluded.updated_at",
            (
                record.agent_id,
                record.highest_version,
                record.highest_sha256,
                record.first_seen_at,
                record.state,
                json.dumps(record.approval.as_json()) if record.approval else None,
                json.dumps(record.revocation.as_json()) if record.revocation else None,
                json.dumps(list(record.diff)),
                datetime.now(UTC).isoformat(timespec="microseconds"),
            ),
        )
