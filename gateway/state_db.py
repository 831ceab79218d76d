"""SQLite files in the state dir that hold who may do what (approvals of agents and
of calls): created 0600, since whoever can write them can approve; durable on commit."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def connect_private(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating 0600 if absent) `path` in WAL mode with full fsync, `schema` applied.

    `busy_timeout` lets two gateway processes on one state dir take turns rather
    than fail at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(schema)
    return conn
