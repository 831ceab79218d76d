"""The audit store: an append-only, hash-chained decision log (SQLite by default).

Each record holds the hash of the one before it, so `verify_chain` finds any edit,
reorder or gap. `AuditStore` is the async front with group commit; where the chain is
kept is a `Chain`: `SqliteChain` here (one gateway, its state dir), or
`gateway.audit_postgres.PostgresChain` (one chain shared by several replicas). A
record is acknowledged only once its transaction is committed (SQLite:
`synchronous=FULL`, durable across a crash); the SQLite chain's one writer thread
owns the connection, so its head lives in memory.
Truncating the newest records leaves a shorter valid chain, so the store also
writes signed checkpoints of its head (gateway/checkpoints.py) to a table beside
the log; `verify_chain` checks them too. What that does and does not prove against
someone who owns the disk: docs/threat-model.md, "Audit checkpoints".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.checkpoints import Checkpoint, CheckpointSigner, match_chain, read_checkpoints
from gateway.errors import AuditUnavailable
from regate import crypto
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
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id          INTEGER PRIMARY KEY,
    record_seq  INTEGER NOT NULL,
    token       TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
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
    return hash_with_body(seq, kind, decision_id, recorded_at, canonical_json(body), prev)


def hash_with_body(
    seq: int, kind: str, decision_id: str, recorded_at: str, body_json: bytes, prev: str
) -> str:
    """`record_hash` given the body's canonical JSON, which the store keeps anyway.

    The canonical form of an object is its members in key order, each value in its
    own canonical form, so the record's bytes are assembled around the body's
    rather than canonicalizing the body a second time (the writer's main cost).
    """
    fields = canonical_json(
        {"decision_id": decision_id, "kind": kind, "prev_hash": prev, "recorded_at": recorded_at}
    )
    # Keys in order: body < decision_id < kind < prev_hash < recorded_at < seq.
    whole = b'{"body":' + body_json + b"," + fields[1:-1] + b',"seq":' + str(seq).encode() + b"}"
    return sha256_hex(whole)


@dataclass(frozen=True)
class Entry:
    """A record to append, before the chain gives it a seq, a time and a hash."""

    kind: str
    decision_id: str
    body: Mapping[str, Any]


# A record as stored: the body as its canonical JSON text.
Row = tuple[int, str, str, str, str, str, str]


def link(entries: Sequence[Entry], seq: int, head: str) -> tuple[list[AuditRecord], list[Row]]:
    """Number, time and hash `entries` as the records after (`seq`, `head`); with the
    rows to store them as (each body canonicalized once, for its hash and its row)."""
    records: list[AuditRecord] = []
    rows: list[Row] = []
    for entry in entries:
        seq += 1
        recorded_at = datetime.now(UTC).isoformat(timespec="microseconds")
        body_json = canonical_json(entry.body)
        digest = hash_with_body(seq, entry.kind, entry.decision_id, recorded_at, body_json, head)
        records.append(
            AuditRecord(seq, entry.kind, entry.decision_id, recorded_at, entry.body, head, digest)
        )
        rows.append(
            (seq, entry.kind, entry.decision_id, recorded_at, body_json.decode(), head, digest)
        )
        head = digest
    return records, rows


# Given the chain's (seq, head) after a batch and the newest seq a stored checkpoint
# covers, the checkpoint to write in the same transaction, or None.
Seal = Callable[[int, str, int], Checkpoint | None]


class Chain(Protocol):
    """Where the records are kept. Used from the store's one writer thread."""

    seq: int  # how many records the chain held after this store's last transaction
    signed_seq: int  # the newest record a stored checkpoint covered, then

    def append_batch(
        self, entries: Sequence[Entry], seal: Seal
    ) -> tuple[list[AuditRecord], Checkpoint | None]:
        """Append all of `entries` (and `seal`'s checkpoint) in one transaction; return
        them once committed, or raise having appended nothing."""
        ...

    def reachable(self) -> bool:
        """Whether the store would take a write now, checked without writing one.
        Called from a worker thread, never the writer's: it must not share state."""
        ...

    def close(self) -> None: ...


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


class SqliteChain:
    """The chain in one SQLite file: the embedded default, for a single gateway."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn = connect(path)
        last = self._conn.execute(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        self.seq: int = last[0] if last else 0
        self._head: str = last[1] if last else GENESIS
        (signed,) = self._conn.execute(
            "SELECT COALESCE(MAX(record_seq), 0) FROM audit_checkpoints"
        ).fetchone()
        self.signed_seq: int = signed

    def append_batch(
        self, entries: Sequence[Entry], seal: Seal
    ) -> tuple[list[AuditRecord], Checkpoint | None]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            records, rows = link(entries, self.seq, self._head)
            self._conn.executemany(
                "INSERT INTO audit_log"
                " (seq, kind, decision_id, recorded_at, body, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            seq, head = (records[-1].seq, records[-1].hash) if records else (self.seq, self._head)
            # The checkpoint rides in the same transaction: no extra fsync.
            checkpoint = seal(seq, head, self.signed_seq)
            if checkpoint is not None:
                self._conn.execute(
                    "INSERT INTO audit_checkpoints (record_seq, token) VALUES (?, ?)",
                    (checkpoint.seq, checkpoint.token),
                )
            self._conn.execute("COMMIT")
        except BaseException:  # the whole batch fails together; the chain is unchanged
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        self.seq, self._head = seq, head
        if checkpoint is not None:
            self.signed_seq = checkpoint.seq
        return records, checkpoint

    def reachable(self) -> bool:
        # Its own connection (the writer's is the writer thread's): the file is there
        # and the write lock can be taken. A full disk shows only on commit (a 503).
        try:
            conn = sqlite3.connect(f"file:{self._path}?mode=rw", uri=True, timeout=1.0)
        except sqlite3.Error:
            return False
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False
        finally:
            conn.close()

    def close(self) -> None:
        self._conn.close()


@dataclass
class _Pending:
    entry: Entry
    future: asyncio.Future[AuditRecord]
    loop: asyncio.AbstractEventLoop


class AuditStore:
    """Async front of the chain; `append` returns once the record is durable.

    Group commit: one writer thread takes every record waiting when it becomes free,
    writes them in one transaction and commits once (one fsync), then answers each
    caller. A lone call costs one commit as before; under load many calls share one,
    so throughput grows with concurrency while each record is still durable before
    its caller hears back. If a commit fails (disk full, I/O error, the database
    down, an unwritable record), every caller in it gets `AuditUnavailable` — a 503:
    nothing proceeds unlogged — and the chain stays where the store really is.

    `chain` is a `Chain`, or a path for the embedded SQLite chain.
    """

    def __init__(
        self,
        chain: Chain | Path,
        *,
        max_batch: int = 256,
        checkpoints: CheckpointSigner | None = None,
    ) -> None:
        self._chain: Chain = SqliteChain(chain) if isinstance(chain, Path) else chain
        self._max_batch = max_batch
        self._signer = checkpoints
        self._signed_at = time.monotonic()
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
            self._pending.append(_Pending(Entry(kind, decision_id, body), future, loop))
            self._wake.notify()
        record = await future
        # The record itself is in the store (`regate audit tail|export`): the log says
        # that it was written, not what it says, so caller input is not copied out.
        log.info(
            "audit_record", kind=kind, seq=record.seq, decision_id=decision_id, hash=record.hash
        )
        return record

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    if not self._wake.wait(self._until_checkpoint()):
                        break  # a quiet log still gets its checkpoint every `every_s`
                if not self._pending and self._closing:
                    if self._signer is not None:
                        self._commit([], final=True)  # a last checkpoint on clean shutdown
                    return  # closing, and nothing left to write
                batch = self._pending[: self._max_batch]
                del self._pending[: len(batch)]
            self._commit(batch)

    def _until_checkpoint(self) -> float | None:
        """How long the writer may sleep before a checkpoint falls due (None: forever)."""
        if self._signer is None or self._chain.seq == self._chain.signed_seq:
            return None
        return max(0.0, self._signer.every_s - (time.monotonic() - self._signed_at))

    def _seal(self, *, final: bool) -> Seal:
        """Sign the head when a checkpoint is due, or on close if anything is unsigned."""

        def seal(seq: int, head: str, signed_seq: int) -> Checkpoint | None:
            if self._signer is None or seq == signed_seq:
                return None
            since = time.monotonic() - self._signed_at
            if not final and not self._signer.due(seq, signed_seq, since):
                return None
            return self._signer.sign(seq, head)

        return seal

    def _commit(self, batch: list[_Pending], *, final: bool = False) -> None:
        try:
            records, checkpoint = self._chain.append_batch(
                [item.entry for item in batch], self._seal(final=final)
            )
        except Exception as exc:  # the whole batch fails together; the chain is unchanged
            log.error("audit_commit_failed", error=str(exc), records=len(batch))
            refusal = AuditUnavailable(
                "the decision could not be recorded, so the call was refused; retry later"
            )
            refusal.__cause__ = exc
            _settle_batch([(item, None, refusal) for item in batch])
            return
        self.commits += 1
        if checkpoint is not None:
            self._signed_at = time.monotonic()
            # The head also goes to the JSON log, which operators ship off the host (the
            # log masks JWS-shaped strings, so `regate audit checkpoint` prints the token).
            log.info(
                "audit_checkpoint",
                seq=checkpoint.seq,
                head=checkpoint.head,
                signed_at=checkpoint.signed_at,
            )
        _settle_batch([(item, r, None) for item, r in zip(batch, records, strict=True)])

    async def healthy(self) -> bool:
        """For /readyz: the writer thread is alive and the store takes writes."""
        return self._thread.is_alive() and await asyncio.to_thread(self._chain.reachable)

    async def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        await asyncio.to_thread(self._thread.join)
        self._chain.close()


_Outcome = tuple["_Pending", AuditRecord | None, BaseException | None]


def _settle_batch(outcomes: list[_Outcome]) -> None:
    """Hand each waiting caller its record (or the refusal): one wake-up per event
    loop for the whole batch, not one per record."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[_Outcome]) -> None:
    for item, record, exc in outcomes:
        if item.future.done():
            continue  # the caller went away (cancelled); the record is written regardless
        if exc is not None:
            item.future.set_exception(exc)
        else:
            assert record is not None
            item.future.set_result(record)


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
    checkpoints: int = 0  # how many signed checkpoints held
    checkpointed: int = 0  # how many records the newest of them covers
    unreadable: bool = False  # the store could not be read: nothing was verified


class ChainWalk:
    """Checks records fed in `seq` order, whatever store they come from: each links to
    the one before and matches its hash, and each receipt names a decision record
    already in the chain (its hash and decision id)."""

    def __init__(self, keep: set[int]) -> None:
        self.count = 0
        self.prev = GENESIS
        self.kept: dict[int, str] = {}  # hashes at the seqs named in `keep`
        self._keep = keep
        self._decisions: dict[str, str] = {}  # decision record hash -> decision id

    def add(self, record: AuditRecord) -> tuple[int, str] | None:
        """(seq, problem) for the first thing wrong with `record`, else None."""
        expected = self.count + 1
        if record.seq != expected:
            return expected, f"record {expected} is missing (next is {record.seq})"
        if record.prev_hash != self.prev:
            return record.seq, "its prev_hash does not match the record before it"
        recomputed = record_hash(
            record.seq, record.kind, record.decision_id, record.recorded_at, record.body, self.prev
        )
        if recomputed != record.hash:
            return record.seq, "its content does not match its hash"
        if record.kind == "decision" and record.body.get("outcome") == "allow":
            # Only an allowed call runs, so only its decision can have a receipt.
            self._decisions[record.hash] = record.decision_id
        elif record.kind == "receipt":
            problem = self._receipt_problem(record)
            if problem:
                return record.seq, problem
        if record.seq in self._keep:
            self.kept[record.seq] = record.hash
        self.prev, self.count = record.hash, record.seq
        return None

    def _receipt_problem(self, record: AuditRecord) -> str:
        named = record.body.get("decision_hash")
        if not isinstance(named, str):
            return "this receipt does not name its decision record (no decision_hash)"
        # Each decision has at most one receipt: forget it once claimed.
        decision_id = self._decisions.pop(named, None)
        if decision_id is None:
            return (
                f"this receipt's decision record ({named[:12]}...) is not an allowed"
                " decision earlier in the log, or already has a receipt"
            )
        if decision_id != record.decision_id:
            return f"this receipt names the decision record of {decision_id}, not its own"
        return ""


def check_chain(
    records: Iterable[AuditRecord], tokens: Sequence[str], keys: crypto.KeySet | None
) -> ChainReport:
    """Walk the chain from the first record, then check the signed checkpoints
    (`tokens`) against it with the gateway's public `keys`; report the first thing that
    fails. Without `keys`, checkpoints make the store fail: they must be checked."""
    checkpoints: list[Checkpoint] = []
    if tokens:
        if keys is None:
            return ChainReport(
                False,
                0,
                None,
                f"the store holds {len(tokens)} signed checkpoints and no public key was"
                " given to check them: pass the gateway's JWKS (--jwks)",
            )
        checkpoints, forged = read_checkpoints(tokens, keys)
        if forged is not None:
            return ChainReport(False, 0, forged.seq, forged.message)
    walk = ChainWalk(keep={c.seq for c in checkpoints})
    for record in records:
        bad = walk.add(record)
        if bad is not None:
            return ChainReport(False, walk.count, bad[0], bad[1])
    problem = match_chain(checkpoints, walk.kept, walk.count)
    if problem is not None:
        return ChainReport(False, walk.count, problem.seq, problem.message)
    newest = max((c.seq for c in checkpoints), default=0)
    return ChainReport(True, walk.count, checkpoints=len(checkpoints), checkpointed=newest)


def verify_chain(
    path: Path, keys: crypto.KeySet | None = None, anchors: Sequence[str] = ()
) -> ChainReport:
    """`check_chain` over the SQLite file at `path`. `anchors` are checkpoint tokens
    kept elsewhere (off the host): checked the same way, they catch a truncation that
    also removed the checkpoints stored here."""
    if not path.exists():
        return ChainReport(False, 0, None, f"no audit store at {path}", unreadable=True)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return check_chain(iter_records(conn), [*_checkpoint_tokens(conn), *anchors], keys)
    except (sqlite3.DatabaseError, ValueError) as exc:
        return ChainReport(False, 0, None, f"cannot read the audit store: {exc}", unreadable=True)
    finally:
        conn.close()


def _checkpoint_tokens(conn: sqlite3.Connection) -> list[str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_checkpoints'"
    ).fetchone()
    if not exists:
        return []  # a store from before checkpoints
    return [token for (token,) in conn.execute("SELECT token FROM audit_checkpoints ORDER BY id")]
