"""The hash-chained audit store (`gateway.audit`): appends, reopen, and tamper detection.

Tampering is done the way an attacker holding the file would: open it with sqlite3,
drop the append-only triggers, and edit rows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import GENESIS, AuditRecord, AuditStore, record_hash, verify_chain
from gateway.errors import AuditUnavailable

RECORDS = 5


def append_all(path: Path, bodies: list[dict[str, Any]]) -> list[AuditRecord]:
    async def run() -> list[AuditRecord]:
        store = AuditStore(path)
        try:
            return [await store.append("decision", f"d-{body['n']}", body) for body in bodies]
        finally:
            await store.close()

    return asyncio.run(run())


def bodies(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {"n": n, "outcome": "allow", "caller": {"sub": "alice"}}
        for n in range(start, start + count)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.sqlite3"
    append_all(path, bodies(1, RECORDS))
    return path


@contextmanager
def attacker(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("DROP TRIGGER audit_log_no_delete")
        yield conn
    finally:
        conn.close()


def test_appends_form_a_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    records = append_all(path, bodies(1, RECORDS))

    assert [r.seq for r in records] == list(range(1, RECORDS + 1))
    assert records[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    for r in records:
        assert r.hash == record_hash(
            r.seq, r.kind, r.decision_id, r.recorded_at, r.body, r.prev_hash
        )

    report = verify_chain(path)
    assert (report.ok, report.records, report.first_bad_seq) == (True, RECORDS, None)


def test_empty_store_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    append_all(path, [])
    assert verify_chain(path).ok


def test_missing_store_is_not_ok(tmp_path: Path) -> None:
    report = verify_chain(tmp_path / "absent.sqlite3")
    assert not report.ok
    assert "no audit store" in report.problem


def test_edited_body(db: Path) -> None:
    with attacker(db) as conn:
        conn.execute(
            "UPDATE audit_log SET body = ? WHERE seq = 3",
            (json.dumps({"n": 3, "outcome": "deny", "caller": {"sub": "alice"}}),),
        )
    report = verify_chain(db)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert report.records == 2
    assert "content does not match its hash" in report.problem


def test_edited_body_with_same_json_value_still_verifies(db: Path) -> None:
    # The hash covers the canonical JSON value, not the stored bytes: re-serialising
    # a body (key order, spacing) is not tampering.
    with attacker(db) as conn:
        conn.execute(
            "UPDATE audit_log SET body = ? WHERE seq = 3",
            (json.dumps({"caller": {"sub": "alice"}, "outcome": "allow", "n": 3}, indent=2),),
        )
    assert verify_chain(db).ok


def test_deleted_middle_row(db: Path) -> None:
    with attacker(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 3")
    report = verify_chain(db)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "record 3 is missing (next is 4)" in report.problem


def test_deleted_first_row(db: Path) -> None:
    with attacker(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 1")
    report = verify_chain(db)
    assert (report.ok, report.first_bad_seq) == (False, 1)
    assert "record 1 is missing" in report.problem


def test_swapped_rows(db: Path) -> None:
    with attacker(db) as conn:
        conn.execute("UPDATE audit_log SET seq = 1000 WHERE seq = 2")
        conn.execute("UPDATE audit_log SET seq = 2 WHERE seq = 3")
        conn.execute("UPDATE audit_log SET seq = 3 WHERE seq = 1000")
    report = verify_chain(db)
    assert not report.ok
    assert report.first_bad_seq == 2
    assert "prev_hash does not match" in report.problem


def test_edited_prev_hash(db: Path) -> None:
    with attacker(db) as conn:
        conn.execute("UPDATE audit_log SET prev_hash = ? WHERE seq = 4", ("f" * 64,))
    report = verify_chain(db)
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert "prev_hash does not match" in report.problem


def test_rehashed_record_breaks_the_next_link(db: Path) -> None:
    # An attacker who edits a record and recomputes its hash still breaks the chain
    # at the following record, whose prev_hash names the old hash.
    with attacker(db) as conn:
        seq, kind, decision_id, recorded_at, prev = conn.execute(
            "SELECT seq, kind, decision_id, recorded_at, prev_hash FROM audit_log WHERE seq = 3"
        ).fetchone()
        forged = {"n": 3, "outcome": "deny"}
        conn.execute(
            "UPDATE audit_log SET body = ?, hash = ? WHERE seq = 3",
            (
                json.dumps(forged),
                record_hash(seq, kind, decision_id, recorded_at, forged, prev),
            ),
        )
    report = verify_chain(db)
    assert (report.ok, report.first_bad_seq, report.records) == (False, 4, 3)


def test_reopened_store_continues_the_chain(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        head = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (RECORDS,)).fetchone()[0]
    finally:
        conn.close()

    [record] = append_all(db, bodies(RECORDS + 1, 1))

    assert record.seq == RECORDS + 1
    assert record.prev_hash == head
    report = verify_chain(db)
    assert (report.ok, report.records) == (True, RECORDS + 1)


@pytest.mark.parametrize(
    "seq", [pytest.param(0, id="seq-zero"), pytest.param(-7, id="seq-negative")]
)
def test_row_outside_the_chain_is_refused_and_reported(db: Path, seq: int) -> None:
    row = (seq, json.dumps({"outcome": "allow"}), GENESIS, "0" * 64)
    insert = "INSERT INTO audit_log VALUES (?, 'decision', 'd-forged', '2030-01-01', ?, ?, ?)"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(insert, row)
        # An attacker with the file can switch the CHECK off; verify still sees the row.
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(insert, row)
    finally:
        conn.close()
    assert not verify_chain(db).ok


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE audit_log SET body = '{}' WHERE seq = 2", id="update"),
        pytest.param("DELETE FROM audit_log WHERE seq = 2", id="delete"),
        pytest.param("DELETE FROM audit_log", id="delete-all"),
    ],
)
def test_sql_update_and_delete_are_refused(db: Path, statement: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="audit_log is append-only"):
            conn.execute(statement)
        count = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    finally:
        conn.close()
    assert count == RECORDS
    assert verify_chain(db).ok


def test_concurrent_appends_share_commits_and_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "concurrent.sqlite3"

    async def burst() -> tuple[list[AuditRecord], int]:
        store = AuditStore(path)
        try:
            records = await asyncio.gather(
                *(store.append("decision", f"d{i}", {"n": i}) for i in range(200))
            )
            return list(records), store.commits
        finally:
            await store.close()

    records, commits = asyncio.run(burst())

    assert sorted(r.seq for r in records) == list(range(1, 201))
    assert {r.decision_id for r in records} == {f"d{i}" for i in range(200)}
    assert commits < 200  # group commit: many records per fsync under load
    report = verify_chain(path)
    assert (report.ok, report.records) == (True, 200)


def test_a_failed_commit_fails_its_callers_and_leaves_the_chain_whole(tmp_path: Path) -> None:
    path = tmp_path / "failing.sqlite3"

    async def scenario() -> None:
        store = AuditStore(path)
        try:
            await store.append("decision", "ok-1", {"n": 1})
            # A body that cannot be written (not canonicalizable) fails its batch.
            with pytest.raises(AuditUnavailable) as refused:
                await store.append("decision", "bad", {"n": float("nan")})
            assert refused.value.status == 503
            assert isinstance(refused.value.__cause__, ValueError)
            await store.append("decision", "ok-2", {"n": 2})
        finally:
            await store.close()

    asyncio.run(scenario())
    report = verify_chain(path)
    assert (report.ok, report.records) == (True, 2)


def test_healthy_while_the_file_takes_writes_not_while_another_holds_its_lock(
    tmp_path: Path,
) -> None:
    """/readyz's audit check: a probe of the SQLite file that writes nothing."""
    path = tmp_path / "audit.sqlite3"

    async def run() -> list[bool]:
        store = AuditStore(path)
        try:
            seen = [await store.healthy()]
            # Another process holding the write lock (e.g. a stuck writer or an
            # operator's open transaction): no write can happen now.
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            try:
                seen.append(await store.healthy())
            finally:
                other.execute("ROLLBACK")
                other.close()
            seen.append(await store.healthy())
            path.unlink()  # the file gone from under the gateway
            seen.append(await store.healthy())
        finally:
            await store.close()
        return seen

    assert asyncio.run(run()) == [True, False, True, False]
