"""Which audit store the configuration names, opened for the gateway or read for the CLI.

`[audit] store = "sqlite"` (the default) keeps the chain in `<state_dir>/audit.sqlite3`
for one gateway; `"postgres"` keeps one chain in PostgreSQL for several replicas.
Both give the same `AuditStore`, records, checkpoints and `ChainReport`. Reading
failures are `QueryError`s whose message names the store (never a password).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from gateway import audit, audit_postgres
from gateway.audit import AuditRecord, AuditStore, ChainReport
from gateway.checkpoints import CheckpointSigner
from regate import crypto
from regate.audit_query import open_store, select_records
from regate.settings import AuditSettings, Settings


class AuditSource(Protocol):
    """Where one deployment's chain is kept. `str()` names it, never with a secret."""

    def open_store(self, checkpoints: CheckpointSigner | None = None) -> AuditStore: ...

    def verify(self, keys: crypto.KeySet | None, anchors: Sequence[str] = ()) -> ChainReport: ...

    def tail(self, n: int) -> list[AuditRecord]:
        """The newest `n` records, oldest first."""
        ...

    def newest_checkpoint(self) -> str | None:
        """The token of the newest stored checkpoint, unverified; None if none yet."""
        ...

    def select(
        self, *, since: datetime | None = None, kinds: Sequence[str] = ()
    ) -> Iterator[AuditRecord]:
        """Records in `seq` order, recorded at or after `since`, of the given kinds."""
        ...


def audit_source(settings: Settings) -> AuditSource:
    if settings.audit.store == "postgres":
        return PostgresSource(settings.audit)
    return SqliteSource(settings.gateway.audit_db)


def open_audit_store(
    settings: Settings, *, checkpoints: CheckpointSigner | None = None
) -> AuditStore:
    return audit_source(settings).open_store(checkpoints)


@dataclass(frozen=True)
class SqliteSource:
    path: Path

    def open_store(self, checkpoints: CheckpointSigner | None = None) -> AuditStore:
        return AuditStore(self.path, checkpoints=checkpoints)

    def verify(self, keys: crypto.KeySet | None, anchors: Sequence[str] = ()) -> ChainReport:
        return audit.verify_chain(self.path, keys, anchors)

    def tail(self, n: int) -> list[AuditRecord]:
        with open_store(self.path) as conn:
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_log").fetchone()
            return list(audit.iter_records(conn, after=max(0, last - n)))

    def newest_checkpoint(self) -> str | None:
        with open_store(self.path) as conn:
            row = conn.execute(
                "SELECT token FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else str(row[0])

    def select(
        self, *, since: datetime | None = None, kinds: Sequence[str] = ()
    ) -> Iterator[AuditRecord]:
        with open_store(self.path) as conn:
            yield from select_records(conn, since=since, kinds=kinds)

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class PostgresSource:
    settings: AuditSettings

    def open_store(self, checkpoints: CheckpointSigner | None = None) -> AuditStore:
        chain = audit_postgres.PostgresChain(self.settings)
        chain.connect_early()
        return AuditStore(chain, checkpoints=checkpoints)

    def verify(self, keys: crypto.KeySet | None, anchors: Sequence[str] = ()) -> ChainReport:
        return audit_postgres.verify_chain(self.settings, keys, anchors)

    def tail(self, n: int) -> list[AuditRecord]:
        return audit_postgres.tail(self.settings, n)

    def newest_checkpoint(self) -> str | None:
        return audit_postgres.newest_checkpoint(self.settings)

    def select(
        self, *, since: datetime | None = None, kinds: Sequence[str] = ()
    ) -> Iterator[AuditRecord]:
        return audit_postgres.select_records(self.settings, since=since, kinds=kinds)

    def __str__(self) -> str:
        return audit_postgres.describe(self.settings)
