"""The audit chain in PostgreSQL: one chain shared by several gateway replicas.

Each replica runs its own `AuditStore` (group commit per replica) over a
`PostgresChain`. A batch is appended in one transaction that first takes a
transaction-scoped advisory lock, so the appends of all replicas are serialized:
lock, read the head, insert the batch after it, commit (which releases the lock).
The head is read inside the lock every time, never kept in memory, since another
replica may have moved it. A record is acknowledged only after COMMIT returns, with
`synchronous_commit` at least `on`.

Any database error fails the batch (`AuditUnavailable`, a 503 to its callers). A
broken connection is dropped and the next batch reconnects, so the gateway recovers
by itself when PostgreSQL comes back.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict

from gateway.audit import (
    GENESIS,
    AuditRecord,
    ChainReport,
    Entry,
    Seal,
    check_chain,
    link,
)
from gateway.checkpoints import Checkpoint
from regate import crypto
from regate.audit_query import QueryError
from regate.settings import AuditSettings

log = structlog.get_logger("regate.audit")

# pg_advisory_xact_lock key that serializes appends: "regate" in ASCII, then 1.
APPEND_LOCK = 0x7265676174650001

SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS audit_log (
        seq          BIGINT PRIMARY KEY CHECK (seq > 0),
        kind         TEXT NOT NULL,
        decision_id  TEXT NOT NULL,
        recorded_at  TEXT NOT NULL,
        body         TEXT NOT NULL,
        prev_hash    TEXT NOT NULL,
        hash         TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS audit_log_decision ON audit_log (decision_id)",
    """
    CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$
    """,
    """
    CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
    """,
    """
    CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
    """,
    # Signed checkpoints of the head (gateway/checkpoints.py), in commit order.
    """
    CREATE TABLE IF NOT EXISTS audit_checkpoints (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        record_seq  BIGINT NOT NULL,
        token       TEXT NOT NULL
    )
    """,
    """
    CREATE OR REPLACE TRIGGER audit_checkpoints_no_change
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
    """,
    """
    CREATE OR REPLACE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
    """,
]

INSERT = (
    "INSERT INTO audit_log (seq, kind, decision_id, recorded_at, body, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
SELECT_RECORDS = (
    "SELECT seq, kind, decision_id, recorded_at, body, prev_hash, hash"
    ' FROM audit_log WHERE recorded_at COLLATE "C" >= %s'
)
SELECT_AFTER = (
    "SELECT seq, kind, decision_id, recorded_at, body, prev_hash, hash"
    " FROM audit_log WHERE seq > %s ORDER BY seq"
)


class AuditStoreError(Exception):
    """The PostgreSQL audit store cannot be used; the message says why (never a secret)."""


def describe(settings: AuditSettings) -> str:
    """Where the chain is, for logs and messages: no password, whatever the DSN holds."""
    try:
        params = conninfo_to_dict(settings.dsn)
    except psycopg.ProgrammingError:
        return "postgresql (unparsable dsn)"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{params.get('dbname', '')}"


def read_password(settings: AuditSettings) -> str | None:
    """The password from its file or variable, read at each connect so it can rotate."""
    if settings.password_file is not None:
        try:
            lines = settings.password_file.read_text().splitlines()
        except OSError as exc:
            raise AuditStoreError(
                f"cannot read audit.password_file {settings.password_file}: {exc.strerror}"
            ) from exc
        if not lines or not lines[0]:
            raise AuditStoreError(
                f"audit.password_file {settings.password_file} is empty: put the password"
                " on its first line"
            )
        return lines[0]
    if settings.password_env is not None:
        password = os.environ.get(settings.password_env)
        if not password:
            raise AuditStoreError(
                f"audit.password_env names {settings.password_env}, which is not set"
            )
        return password
    return None  # trust, certificates, or libpq's own ~/.pgpass / PGPASSFILE


def connect(settings: AuditSettings, *, read_only: bool = False) -> psycopg.Connection[Any]:
    """A connection with deadlines set, so a stuck database or replica means a 503."""
    password = read_password(settings)
    extra: dict[str, Any] = {} if password is None else {"password": password}
    try:
        conn = psycopg.connect(
            settings.dsn,
            connect_timeout=max(1, round(settings.timeout_s)),
            application_name="regate-audit",
            **extra,
        )
    except psycopg.Error as exc:
        raise AuditStoreError(f"cannot connect to {describe(settings)}: {exc}") from exc
    try:
        deadline_ms = str(round(settings.timeout_s * 1000))
        for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"):
            # A replica that hangs holding the append lock is cut off by the server.
            conn.execute("SELECT set_config(%s, %s, false)", (name, deadline_ms))
        durability = conn.execute("SHOW synchronous_commit").fetchone()
        if durability is not None and durability[0] == "off":
            conn.execute("SET synchronous_commit = on")  # acknowledged means durable
        conn.commit()
        # Each statement's own snapshot, whatever the database's default: the head is
        # read after the append lock is granted, so it is the one the last holder
        # committed (a transaction snapshot could predate the lock).
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        conn.read_only = read_only
    except BaseException:
        conn.close()
        raise
    return conn


def create_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the tables once; a role without CREATE can use tables made by their owner."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))  # replicas start together
    if not (_exists(conn, "audit_log") and _exists(conn, "audit_checkpoints")):
        for statement in SCHEMA:
            conn.execute(statement)
    conn.commit()


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    found = conn.execute("SELECT to_regclass(%s)::text", (table,)).fetchone()
    return found is not None and found[0] is not None


class PostgresChain:
    """The `Chain` of an `AuditStore` in PostgreSQL; used from the store's writer thread."""

    def __init__(self, settings: AuditSettings) -> None:
        self._settings = settings
        self._conn: psycopg.Connection[Any] | None = None
        self.where = describe(settings)
        # As of this replica's last transaction; other replicas move them meanwhile.
        self.seq = 0
        self.signed_seq = 0

    def connect_early(self) -> None:
        """At start, so a wrong DSN or password is in the log before the first call
        (which would fail anyway, and reconnect, as every later one does)."""
        with contextlib.suppress(AuditStoreError, psycopg.Error):
            self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                conn = connect(self._settings)
                try:
                    create_schema(conn)
                except BaseException:
                    conn.close()
                    raise
            except (AuditStoreError, psycopg.Error) as exc:
                log.error("audit_store_unreachable", store=self.where, error=str(exc))
                raise
            self._conn = conn
            log.info("audit_store_connected", store=self.where)
        return self._conn

    def append_batch(
        self, entries: Sequence[Entry], seal: Seal
    ) -> tuple[list[AuditRecord], Checkpoint | None]:
        try:
            return self._append_once(entries, seal)
        except psycopg.OperationalError as exc:
            if not self._drop_broken():
                raise
            # The connection died while idle (PostgreSQL restarted, a proxy timed it
            # out) before COMMIT was sent, so none of the batch is in: retry once.
            log.warning("audit_store_reconnecting", store=self.where, error=str(exc))
        return self._append_once(entries, seal)

    def _append_once(
        self, entries: Sequence[Entry], seal: Seal
    ) -> tuple[list[AuditRecord], Checkpoint | None]:
        conn = self._connection()
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            head = conn.execute(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, digest = (int(head[0]), str(head[1])) if head else (0, GENESIS)
            records, rows = link(entries, seq, digest)
            if records:
                with conn.cursor() as cursor:
                    cursor.executemany(INSERT, rows)
                seq, digest = records[-1].seq, records[-1].hash
            signed = conn.execute(
                "SELECT COALESCE(MAX(record_seq), 0) FROM audit_checkpoints"
            ).fetchone()
            signed_seq = int(signed[0]) if signed else 0
            # The checkpoint rides in the same transaction, under the same lock.
            checkpoint = seal(seq, digest, signed_seq)
            if checkpoint is not None:
                conn.execute(
                    "INSERT INTO audit_checkpoints (record_seq, token) VALUES (%s, %s)",
                    (checkpoint.seq, checkpoint.token),
                )
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise
        try:
            conn.commit()
        except psycopg.Error as exc:
            # Not retried: the batch may or may not be in. Its callers are refused, so
            # at worst a refused call has a record, never an answered call none.
            self._drop_broken()
            raise AuditStoreError(f"COMMIT failed on {self.where}: {exc}") from exc
        self.seq = seq
        self.signed_seq = checkpoint.seq if checkpoint is not None else signed_seq
        return records, checkpoint

    def _drop_broken(self) -> bool:
        """Forget a broken connection (the next batch reconnects); say if it was one."""
        conn = self._conn
        if conn is None or not (conn.broken or conn.closed):
            return False
        self._conn = None
        conn.close()
        return True

    def reachable(self) -> bool:
        # A connection of its own (the writer's belongs to the writer thread), within
        # the store's deadlines: a replica that cannot reach PostgreSQL is not ready.
        try:
            with connect(self._settings, read_only=True) as conn:
                conn.execute("SELECT 1")
        except (AuditStoreError, psycopg.Error):
            return False
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def iter_records(
    conn: psycopg.Connection[Any], *, after: int | None = None
) -> Iterator[AuditRecord]:
    """Records in `seq` order, streamed (a server-side cursor), within the caller's
    transaction."""
    # All of them, whatever their seq, unless `after` is given: a forged seq <= 0 shows.
    floor = after if after is not None else -(2**63)
    with conn.cursor(name="regate_audit_records") as cursor:
        cursor.itersize = 1000
        cursor.execute(SELECT_AFTER, (floor,))
        for values in cursor:
            yield _record(values)


def _record(values: tuple[Any, ...]) -> AuditRecord:
    seq, kind, decision_id, recorded_at, body, prev_hash, digest = values
    return AuditRecord(seq, kind, decision_id, recorded_at, json.loads(body), prev_hash, digest)


def _reading(settings: AuditSettings) -> psycopg.Connection[Any]:
    try:
        conn = connect(settings, read_only=True)
    except AuditStoreError as exc:
        raise QueryError(str(exc)) from exc
    # One snapshot for the whole read, while the replicas go on appending.
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return conn


def verify_chain(
    settings: AuditSettings, keys: crypto.KeySet | None = None, anchors: Sequence[str] = ()
) -> ChainReport:
    """`check_chain` over the database; one that cannot be read does not verify."""
    where = describe(settings)
    try:
        with _reading(settings) as conn:
            if not _exists(conn, "audit_log"):
                return ChainReport(
                    False, 0, None, f"no audit_log table in {where}", unreadable=True
                )
            tokens = [*_checkpoint_tokens(conn), *anchors]
            return check_chain(iter_records(conn), tokens, keys)
    except (QueryError, psycopg.Error, ValueError) as exc:
        return ChainReport(
            False, 0, None, f"cannot read the audit store {where}: {exc}", unreadable=True
        )


def _checkpoint_tokens(conn: psycopg.Connection[Any]) -> list[str]:
    if not _exists(conn, "audit_checkpoints"):
        return []
    rows = conn.execute("SELECT token FROM audit_checkpoints ORDER BY id").fetchall()
    return [str(token) for (token,) in rows]


def tail(settings: AuditSettings, n: int) -> list[AuditRecord]:
    """The newest `n` records, oldest first."""
    with _read_errors(settings), _reading(settings) as conn:
        last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_log").fetchone()
        return list(iter_records(conn, after=max(0, (last[0] if last else 0) - n)))


def newest_checkpoint(settings: AuditSettings) -> str | None:
    with _read_errors(settings), _reading(settings) as conn:
        found = conn.execute(
            "SELECT token FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if found is None else str(found[0])


def select_records(
    settings: AuditSettings, *, since: datetime | None = None, kinds: Sequence[str] = ()
) -> Iterator[AuditRecord]:
    """As regate.audit_query.select_records, from the database."""
    floor = since.astimezone(UTC).isoformat(timespec="microseconds") if since else ""
    with _read_errors(settings), _reading(settings) as conn:
        # recorded_at is always UTC isoformat with microseconds: it sorts as text.
        query = SELECT_RECORDS + (" AND kind = ANY(%s)" if kinds else "") + " ORDER BY seq"
        params: list[Any] = [floor, list(kinds)] if kinds else [floor]
        with conn.cursor(name="regate_audit_select") as cursor:
            cursor.itersize = 1000
            cursor.execute(query, params)
            for values in cursor:
                yield _record(values)


@contextlib.contextmanager
def _read_errors(settings: AuditSettings) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise QueryError(f"cannot read the audit store {describe(settings)}: {exc}") from exc
