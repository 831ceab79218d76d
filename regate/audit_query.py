"""Reading the audit store from the command line: which records, since when.

`regate audit export` and `regate policy replay` select records the same way:
`--since` (an RFC 3339 time, or a duration back from now such as `90s`, `15m`,
`2h`, `7d`) and `--kind`. The store is opened read-only: reading never blocks
or changes the gateway's writes.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.audit import AuditRecord

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class QueryError(Exception):
    """A bad --since, or a store that cannot be read; the message says which."""


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`2026-11-22T18:00:00Z` (an offset is required) or `15m` back from now."""
    duration = _DURATION.match(text.strip())
    if duration:
        amount, unit = int(duration.group(1)), duration.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise QueryError(
            f"--since {text!r}: give an RFC 3339 time with its offset"
            " (e.g. 2026-11-22T18:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)"
        )
    return moment.astimezone(UTC)


@contextmanager
def open_store(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.exists():
        raise QueryError(f"no audit store at {path} (check --db or the config's state_dir)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def select_records(
    conn: sqlite3.Connection, *, since: datetime | None = None, kinds: Sequence[str] = ()
) -> Iterator[AuditRecord]:
    """Records in `seq` order, recorded at or after `since`, of the given kinds."""
    where, params = [], []
    if since is not None:
        # recorded_at is always UTC isoformat with microseconds: it sorts as text.
        where.append("recorded_at >= ?")
        params.append(since.astimezone(UTC).isoformat(timespec="microseconds"))
    if kinds:
        where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        params.extend(kinds)
    query = "SELECT seq, kind, decision_id, recorded_at, body, prev_hash, hash FROM audit_log"
    if where:
        query += " WHERE " + " AND ".join(where)
    try:
        rows = conn.execute(query + " ORDER BY seq", params)
        for seq, kind, decision_id, recorded_at, body, prev_hash, digest in rows:
            yield AuditRecord(
                seq, kind, decision_id, recorded_at, json.loads(body), prev_hash, digest
            )
    except sqlite3.DatabaseError as exc:
        raise QueryError(f"cannot read the audit store: {exc}") from exc


def shadow_verdict(record: AuditRecord) -> str | None:
    """`agreed`, `disagreed` or `failed` for a decision the shadow policy saw
    (gateway/shadow.py), None for any other record."""
    shadow = record.body.get("shadow") if record.kind == "decision" else None
    if not isinstance(shadow, dict):
        return None
    agrees = shadow.get("agrees")
    return "failed" if agrees is None else "agreed" if agrees else "disagreed"


def export_line(record: AuditRecord) -> dict[str, Any]:
    """One record as `regate audit export` writes it: everything its hash covers, so
    a reader can recompute the chain from the export alone."""
    return {
        "seq": record.seq,
        "kind": record.kind,
        "decision_id": record.decision_id,
        "recorded_at": record.recorded_at,
        "body": record.body,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }
