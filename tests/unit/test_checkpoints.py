"""Signed checkpoints of the audit log, and receipts chained to their decisions.

The attacker holds the file: drops the append-only triggers, deletes the tail,
rewrites records and recomputes the chain, deletes or forges checkpoints. Each must
fail `verify_chain` with a message saying what happened, and `regate audit verify`
must say it too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditStore, record_hash, verify_chain
from gateway.checkpoints import CHECKPOINT_TYP, CheckpointError, CheckpointSigner, read_checkpoint
from regate import crypto
from regate.cli import main

RECORDS = 7
EVERY = 3


@pytest.fixture
def key(tmp_path: Path) -> crypto.Jwk:
    private, _ = crypto.write_key_pair(tmp_path / "keys", "gateway")
    return crypto.load_private_key(private)


@pytest.fixture
def keys(tmp_path: Path, key: crypto.Jwk) -> crypto.KeySet:
    return crypto.load_jwks(tmp_path / "keys" / "gateway.jwks.json")


def signer(key: crypto.Jwk, every_records: int = EVERY, every_s: float = 3600) -> CheckpointSigner:
    return CheckpointSigner(key, every_records=every_records, every_s=every_s)


def write(path: Path, key: crypto.Jwk, entries: list[tuple[str, str, dict[str, Any]]]) -> None:
    async def run() -> None:
        store = AuditStore(path, checkpoints=signer(key))
        try:
            for kind, decision_id, body in entries:
                await store.append(kind, decision_id, body)
        finally:
            await store.close()

    asyncio.run(run())


def decisions(count: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [("decision", f"d-{n}", {"n": n, "outcome": "deny"}) for n in range(1, count + 1)]


@pytest.fixture
def db(tmp_path: Path, key: crypto.Jwk) -> Path:
    path = tmp_path / "audit.sqlite3"
    write(path, key, decisions(RECORDS))
    return path


def checkpoint_rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT record_seq, token FROM audit_checkpoints ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


@contextmanager
def attacker(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for trigger in (
            "audit_log_no_update",
            "audit_log_no_delete",
            "audit_checkpoints_no_update",
            "audit_checkpoints_no_delete",
        ):
            conn.execute(f"DROP TRIGGER {trigger}")
        yield conn
    finally:
        conn.close()


def test_checkpoints_every_n_records_and_on_close(db: Path, keys: crypto.KeySet) -> None:
    rows = checkpoint_rows(db)

    assert [seq for seq, _ in rows] == [3, 6, 7]  # every 3, then the clean shutdown
    for seq, token in rows:
        assert read_checkpoint(token, keys).seq == seq
    report = verify_chain(db, keys)
    assert (report.ok, report.records, report.checkpoints, report.checkpointed) == (
        True,
        RECORDS,
        3,
        RECORDS,
    )


def test_a_quiet_log_is_checkpointed_after_every_s(tmp_path: Path, key: crypto.Jwk) -> None:
    path = tmp_path / "audit.sqlite3"

    async def run() -> list[tuple[int, str]]:
        store = AuditStore(path, checkpoints=signer(key, every_records=1000, every_s=0.2))
        try:
            await store.append("decision", "d-1", {"n": 1})
            deadline = time.monotonic() + 10
            while not checkpoint_rows(path) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return checkpoint_rows(path)  # read while the store is still open
        finally:
            await store.close()

    rows = asyncio.run(run())
    assert [seq for seq, _ in rows] == [1]
    assert [seq for seq, _ in checkpoint_rows(path)] == [1]  # nothing new to sign on close


def test_reopened_store_keeps_checkpointing_from_where_it_was(
    db: Path, key: crypto.Jwk, keys: crypto.KeySet
) -> None:
    write(db, key, decisions(2))
    assert [seq for seq, _ in checkpoint_rows(db)] == [3, 6, 7, 9]
    assert verify_chain(db, keys).ok


def test_tail_truncated_below_the_last_checkpoint_fails(db: Path, keys: crypto.KeySet) -> None:
    with attacker(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq > 5")

    report = verify_chain(db, keys)

    assert not report.ok
    assert report.records == 5
    assert report.problem.startswith("the log was truncated: checkpoint #2")
    assert "covers 6 records, but only 5 remain" in report.problem


def test_tail_rewritten_with_a_recomputed_chain_fails(db: Path, keys: crypto.KeySet) -> None:
    # The attacker edits record 7 and recomputes its hash: the chain alone holds (it
    # is the last record), the checkpoint signed over the old hash does not.
    with attacker(db) as conn:
        seq, kind, decision_id, recorded_at, prev = conn.execute(
            "SELECT seq, kind, decision_id, recorded_at, prev_hash FROM audit_log WHERE seq = 7"
        ).fetchone()
        forged = {"n": 7, "outcome": "allow"}
        conn.execute(
            "UPDATE audit_log SET body = ?, hash = ? WHERE seq = 7",
            (json.dumps(forged), record_hash(seq, kind, decision_id, recorded_at, forged, prev)),
        )

    report = verify_chain(db, keys)

    assert (report.ok, report.first_bad_seq) == (False, 7)
    assert "record 7 is not the one checkpoint #3" in report.problem
    assert "rewritten" in report.problem


def test_edited_record_fails_at_that_record(db: Path, keys: crypto.KeySet) -> None:
    with attacker(db) as conn:
        conn.execute("UPDATE audit_log SET body = '{\"n\": 2}' WHERE seq = 2")

    report = verify_chain(db, keys)

    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "content does not match its hash" in report.problem


def test_checkpoint_signed_with_another_key_is_forged(
    db: Path, keys: crypto.KeySet, tmp_path: Path
) -> None:
    # Same kid, different key: what someone without the gateway's key can make.
    impostor, _ = crypto.generate_ec_key(str(next(iter(keys.keys))))
    forged = signer(impostor).sign(5, "0" * 64)
    with attacker(db) as conn:
        conn.execute(
            "INSERT INTO audit_checkpoints (record_seq, token) VALUES (?, ?)", (5, forged.token)
        )

    report = verify_chain(db, keys)

    assert not report.ok
    assert report.problem.startswith("checkpoint #4 is forged: its signature does not verify")


def test_checkpoint_with_an_edited_payload_is_forged(db: Path, keys: crypto.KeySet) -> None:
    # Moving a checkpoint back (to hide a truncation) means editing what it signed.
    (_, token), *_ = checkpoint_rows(db)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["seq"] = 1
    moved = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(CheckpointError, match="signature does not verify"):
        read_checkpoint(f"{header}.{moved}.{signature}", keys)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"seq": 0, "head": "a" * 64, "time": "t"}, id="seq-zero"),
        pytest.param({"seq": True, "head": "a" * 64, "time": "t"}, id="seq-bool"),
        pytest.param({"seq": 3, "head": "short", "time": "t"}, id="head-not-sha256"),
        pytest.param({"seq": 3, "head": "a" * 64}, id="no-time"),
    ],
)
def test_malformed_checkpoint_payloads_are_refused(
    key: crypto.Jwk, keys: crypto.KeySet, payload: dict[str, Any]
) -> None:
    token = crypto.sign_jws(json.dumps(payload).encode(), key, typ=CHECKPOINT_TYP)
    with pytest.raises(CheckpointError, match="payload is not"):
        read_checkpoint(token, keys)


def test_a_grant_is_not_a_checkpoint(key: crypto.Jwk, keys: crypto.KeySet) -> None:
    token = crypto.sign_jws(b'{"seq": 1}', key, typ="regate-grant+jwt")
    with pytest.raises(CheckpointError, match="expected 'regate-audit-checkpoint\\+jws'"):
        read_checkpoint(token, keys)


def test_checkpoints_without_a_key_do_not_verify(db: Path) -> None:
    report = verify_chain(db)
    assert not report.ok
    assert "3 signed checkpoints and no public key" in report.problem


def test_an_anchor_catches_truncation_that_took_the_checkpoints_too(
    db: Path, keys: crypto.KeySet
) -> None:
    anchor = checkpoint_rows(db)[-1][1]  # kept off the host, e.g. from the JSON log
    with attacker(db) as conn:
        conn.execute("DELETE FROM audit_checkpoints WHERE record_seq > 3")
        conn.execute("DELETE FROM audit_log WHERE seq > 4")

    assert verify_chain(db, keys).ok  # the store alone cannot show it (threat model)
    report = verify_chain(db, keys, [anchor])
    assert not report.ok
    assert "covers 7 records, but only 4 remain" in report.problem


# --- receipts are chained to their decisions ----------------------------------


def receipt_of(conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
    decision_id, digest = conn.execute(
        "SELECT decision_id, hash FROM audit_log WHERE seq = ?", (seq,)
    ).fetchone()
    return {"decision_id": decision_id, "decision_seq": seq, "decision_hash": digest}


def test_receipts_that_name_their_decision_verify(
    tmp_path: Path, key: crypto.Jwk, keys: crypto.KeySet
) -> None:
    path = tmp_path / "audit.sqlite3"

    async def run() -> None:
        store = AuditStore(path, checkpoints=signer(key))
        try:
            decided = await store.append("decision", "d-1", {"outcome": "allow"})
            await store.append("decision", "d-2", {"outcome": "deny"})
            await store.append(
                "receipt", "d-1", {"decision_hash": decided.hash, "decision_seq": decided.seq}
            )
        finally:
            await store.close()

    asyncio.run(run())
    assert verify_chain(path, keys).ok


@pytest.mark.parametrize(
    ("receipt", "problem"),
    [
        pytest.param(
            lambda conn: {"ok": True},
            "does not name its decision record",
            id="no-decision-hash",
        ),
        pytest.param(
            lambda conn: {**receipt_of(conn, 1), "decision_hash": "f" * 64},
            "is not an allowed",
            id="unknown-decision",
        ),
        pytest.param(
            lambda conn: receipt_of(conn, 2),
            "names the decision record of d-2, not its own",
            id="someone-elses-decision",
        ),
    ],
)
def test_receipts_that_do_not_name_their_decision_fail(
    tmp_path: Path, key: crypto.Jwk, keys: crypto.KeySet, receipt: Any, problem: str
) -> None:
    path = tmp_path / "audit.sqlite3"
    allowed = {"outcome": "allow"}
    write(path, key, [("decision", "d-1", allowed), ("decision", "d-2", allowed)])
    conn = sqlite3.connect(path)
    try:
        body = receipt(conn)
    finally:
        conn.close()
    write(path, key, [("receipt", "d-1", body)])

    report = verify_chain(path, keys)

    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert problem in report.problem


def test_a_second_receipt_for_one_decision_fails(
    tmp_path: Path, key: crypto.Jwk, keys: crypto.KeySet
) -> None:
    path = tmp_path / "audit.sqlite3"
    write(path, key, [("decision", "d-1", {"outcome": "allow"})])
    conn = sqlite3.connect(path)
    try:
        body = receipt_of(conn, 1)
    finally:
        conn.close()
    write(path, key, [("receipt", "d-1", body), ("receipt", "d-1", body)])

    report = verify_chain(path, keys)

    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert "already has a receipt" in report.problem


def test_a_receipt_for_a_denied_decision_fails(
    tmp_path: Path, key: crypto.Jwk, keys: crypto.KeySet
) -> None:
    """A denied call never runs, so a receipt naming its decision means something ran
    without an allow (and verify keeps no state for denials)."""
    path = tmp_path / "audit.sqlite3"
    write(path, key, [("decision", "d-1", {"outcome": "deny"})])
    conn = sqlite3.connect(path)
    try:
        body = receipt_of(conn, 1)
    finally:
        conn.close()
    write(path, key, [("receipt", "d-1", body)])

    report = verify_chain(path, keys)

    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "is not an allowed" in report.problem


# --- the command ---------------------------------------------------------------


def test_cli_verify_says_ok_then_truncated(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `--db` finds the gateway's public keys in keys/ beside the store, as in a state dir.
    assert main(["audit", "verify", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 7 records")
    assert "3 signed checkpoints hold, the newest covers 7 of 7 records" in out

    with attacker(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 7")

    assert main(["audit", "verify", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("TAMPERED: record 7: the log was truncated")


def test_cli_verify_with_a_wrong_key_says_forged(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    crypto.write_key_pair(other, "gateway")
    assert main(["audit", "verify", "--db", str(db), "--jwks", str(other / "gateway.jwks.json")])
    assert "checkpoint #1 is forged" in capsys.readouterr().out


def test_cli_verify_of_an_unreadable_store_is_not_called_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or broken store is a different failure (exit 2) from a chain that
    does not hold (exit 1): an operator must not read "tampered" into a typo."""
    assert main(["audit", "verify", "--db", str(tmp_path / "absent.sqlite3")]) == 2
    assert capsys.readouterr().out.startswith("CANNOT VERIFY: no audit store at")

    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database at all" * 100)
    assert main(["audit", "verify", "--db", str(garbage)]) == 2
    assert capsys.readouterr().out.startswith("CANNOT VERIFY: cannot read the audit store")
