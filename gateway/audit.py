"""The audit store: an append-only, hash-chained decision log in SQLite.

Each record holds the hash of the one before it, so `verify_chain` finds any edit,
reorder or gap. A record is acknowledged only once its transaction is committed
with `synchronous=FULL` (durable across a crash). One writer thread owns the
connection, so appends are serialized and the chain head lives in memory.
(Truncating the newest records cannot be seen from inside the file alone; anchor
the head hash elsewhere when that matters — see docs/threat-model.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import AuditUnavailable
from regate.canonical import canonical_json, sha256_hex

log = structlog.get_logger("regate.audit")

GENESIS = "0" * 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq          INTEGER PRIMARY KEY CHECK (seq > 0),
    kind         TEXT NOT NULL,
    decision_id  TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    body         TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_decision ON audit_log (decision_id);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    kind: str
    decision_id: str
    recorded_at: str
    body: Mapping[str, Any]
    prev_hash: str
    hash: str


def record_hash(
    seq: int, kind: str, decision_id: str, recorded_at: str, body: Mapping[str, Any], prev: str
) -> str:
    return sha256_hex(
        canonical_json(
            {
                "seq": seq,
                "kind": kind,
                "decision_id": decision_id,
                "recorded_at": recorded_at,
                "body": body,
                "prev_hash": prev,
            }
        )
    )


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


@dataclass
class _Pending:
    kind: str
    decision_id: str
    body: Mapping[str, Any]
    future: asyncio.Future[AuditRecord]
    loop: asyncio.AbstractEventLoop


class AuditStore:
    """Async front of the SQLite chain; `append` returns once the record is durable.

    Group commit: one writer thread takes every record waiting when it becomes free,
    writes them in one transaction and commits once (one fsync), then answers each
    caller. A lone call costs one commit as before; under load many calls share one,
    so throughput grows with concurrency while each record is still durable before
    its caller hears back. If a commit fails (disk full, I/O error, an unwritable
    record), every caller in it gets `AuditUnavailable` — a 503: nothing proceeds
    unlogged — and the chain head stays where the store really is.
    """

    def __init__(self, path: Path, *, max_batch: int = 256) -> None:
        self._conn = connect(path)
        self._max_batch = max_batch
        row = self._conn.execute(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        self._seq: int = row[0] if row else 0
        self._head: str = row[1] if row else GENESIS
        self._pending: list[_Pending] = []
        self._wake = threading.Condition()
        self._closing = False
        self.commits = 0  # how many transactions: fewer than records under load
        self._thread = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._thread.start()

    async def append(self, kind: str, decision_id: str, body: Mapping[str, Any]) -> AuditRecord:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AuditRecord] = loop.create_future()
        with self._wake:
            if self._closing:
                raise RuntimeError("the audit store is closed")
            self._pending.append(_Pending(kind, decision_id, body, future, loop))
            self._wake.notify()
        record = await future
        log.info("audit_record", kind=kind, seq=record.seq, record=dict(body))
        return record

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return  # closing, and nothing left to write
                batch = self._pending[: self._max_batch]
                del self._pending[: len(batch)]
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        seq, head = self._seq, self._head
        records: list[AuditRecord] = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                seq += 1
                recorded_at = datetime.now(UTC).isoformat(timespec="microseconds")
                digest = record_hash(seq, item.kind, item.decision_id, recorded_at, item.body, head)
                self._conn.execute(
                    "INSERT INTO audit_log"
                    " (seq, kind, decision_id, recorded_at, body, prev_hash, hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq,
                        item.kind,
                        item.decision_id,
                        recorded_at,
                        canonical_json(item.body).decode(),
                        head,
                        digest,
                    ),
                )
                records.append(
                    AuditRecord(
                        seq, item.kind, item.decision_id, recorded_at, item.body, head, digest
                    )
                )
                head = digest
            self._conn.execute("COMMIT")
        except Exception as exc:  # the whole batch fails together; the chain is unchanged
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            log.error("audit_commit_failed", error=str(exc), records=len(batch))
            refusal = AuditUnavailable(
                "the decision could not be recorded, so the call was refused; retry later"
            )
            refusal.__cause__ = exc
            for item in batch:
                item.loop.call_soon_threadsafe(_settle, item.future, None, refusal)
            return
        self._seq, self._head = seq, head
        self.commits += 1
        for item, record in zip(batch, records, strict=True):
            item.loop.call_soon_threadsafe(_settle, item.future, record, None)

    async def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        await asyncio.to_thread(self._thread.join)
        self._conn.close()


def _settle(
    future: asyncio.Future[AuditRecord], record: AuditRecord | None, exc: BaseException | None
) -> None:
    if future.done():
        return  # the caller went away (cancelled); the record is written regardless
    if exc is not None:
        future.set_exception(exc)
    else:
        assert record is not None
        future.set_result(record)


def iter_records(conn: sqlite3.Connection, *, after: int | None = None) -> Iterator[AuditRecord]:
    """Records in `seq` order; all of them (whatever their seq) unless `after` is given."""
    query = "SELECT seq, kind, decision_id, recorded_at, body, prev_hash, hash FROM audit_log"
    rows = (
        conn.execute(query + " ORDER BY seq")
        if after is None
        else conn.execute(query + " WHERE seq > ? ORDER BY seq", (after,))
    )
    for seq, kind, decision_id, recorded_at, body, prev_hash, digest in rows:
        yield AuditRecord(seq, kind, decision_id, recorded_at, json.loads(body), prev_hash, digest)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str = ""


def verify_chain(path: Path) -> ChainReport:
    """Walk the chain from the first record; report the first one that does not hold."""
    if not path.exists():
        return ChainReport(ok=False, records=0, problem=f"no audit store at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        expected_seq, prev, count = 1, GENESIS, 0
        for record in iter_records(conn):
            if record.seq != expected_seq:
                return ChainReport(
                    False,
                    count,
                    expected_seq,
                    f"record {expected_seq} is missing (next is {record.seq})",
                )
            if record.prev_hash != prev:
                return ChainReport(
                    False, count, record.seq, "its prev_hash does not match the record before it"
                )
            recomputed = record_hash(
                record.seq, record.kind, record.decision_id, record.recorded_at, record.body, prev
            )
            if recomputed != record.hash:
                return ChainReport(False, count, record.seq, "its content does not match its hash")
            prev, expected_seq, count = record.hash, expected_seq + 1, count + 1
        return ChainReport(ok=True, records=count)
    except (sqlite3.DatabaseError, ValueError) as exc:
        return ChainReport(False, 0, None, f"cannot read the audit store: {exc}")
    finally:
        conn.close()
