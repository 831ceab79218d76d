"""The PostgreSQL audit store against a real PostgreSQL server (tests/postgres_cluster.py).

The store alone: round trip, two stores (two replicas' writers) on one chain,
tampering, the append-only triggers, a server restart under it. Then two real
gateway processes sharing one chain, and the server stopped under them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import RunningStack, free_port, start_stack, stop_stack
from postgres_cluster import ROLE, PostgresServer, postgres_server  # noqa: F401 (fixture)
from structlog.testing import capture_logs

from gateway.audit import GENESIS, AuditRecord, AuditStore, record_hash
from gateway.audit_postgres import (
    APPEND_LOCK,
    PostgresChain,
    connect,
    newest_checkpoint,
    tail,
    verify_chain,
)
from gateway.audit_stores import PostgresSource
from gateway.checkpoints import CheckpointSigner, read_checkpoint
from gateway.errors import AuditUnavailable
from regate import crypto
from regate.settings import AuditSettings
from regate.supervisor import Service

pytestmark = pytest.mark.integration


@pytest.fixture
def audit(server: PostgresServer) -> AuditSettings:
    """A fresh, empty database for each test of the store alone."""
    server.reset_database()
    return server.audit_settings()


def append_all(
    settings: AuditSettings,
    count: int,
    start: int = 1,
    checkpoints: CheckpointSigner | None = None,
) -> list[AuditRecord]:
    async def run() -> list[AuditRecord]:
        store = AuditStore(PostgresChain(settings), checkpoints=checkpoints)
        try:
            return [
                await store.append("decision", f"d-{n}", {"n": n, "outcome": "allow"})
                for n in range(start, start + count)
            ]
        finally:
            await store.close()

    return asyncio.run(run())


def as_owner(server: PostgresServer, statement: str, *params: Any) -> None:
    with psycopg.connect(
        server.dsn, password=server.password_file.read_text().strip(), autocommit=True
    ) as conn:
        conn.execute(statement, params or None)


# --- the store alone ------------------------------------------------------------


def test_appends_round_trip_and_a_reopened_store_continues(audit: AuditSettings) -> None:
    records = append_all(audit, 5)

    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    assert all(
        r.hash == record_hash(r.seq, r.kind, r.decision_id, r.recorded_at, r.body, r.prev_hash)
        for r in records
    )
    [sixth] = append_all(audit, 1, start=6)
    assert (sixth.seq, sixth.prev_hash) == (6, records[-1].hash)

    report = verify_chain(audit)
    assert (report.ok, report.records) == (True, 6)
    assert [(r.seq, r.body) for r in tail(audit, 2)] == [
        (5, {"n": 5, "outcome": "allow"}),
        (6, {"n": 6, "outcome": "allow"}),
    ]


@pytest.mark.parametrize(
    "isolation",
    [
        pytest.param("read committed", id="server-default"),
        # A database whose default isolation would take the snapshot before the lock
        # is granted: the writer must still see the head the other replica committed.
        pytest.param("repeatable read", id="database-default-repeatable-read"),
    ],
)
def test_two_replicas_append_concurrently_into_one_chain(
    server: PostgresServer, audit: AuditSettings, isolation: str
) -> None:
    # Two stores, each with its own writer thread and connection, as two gateway
    # replicas have. A third session holds the append lock until both wait on it,
    # so their transactions really do contend, and the lock is what orders them.
    with server.superuser() as conn:
        conn.execute(f"ALTER DATABASE regate SET default_transaction_isolation = '{isolation}'")

    async def burst() -> tuple[list[AuditRecord], list[int]]:
        replicas = [AuditStore(PostgresChain(audit), max_batch=10) for _ in range(2)]
        try:
            with server.superuser("regate") as holder:
                holder.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))
                appends = asyncio.gather(
                    *(
                        replicas[i % 2].append("decision", f"d{i}", {"n": i, "replica": i % 2})
                        for i in range(200)
                    )
                )
                for _ in range(200):  # bounded: at most ~10 s
                    waiting = holder.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    ).fetchone()
                    if waiting == (2,):
                        break
                    await asyncio.sleep(0.05)
                assert waiting == (2,), "both replicas should be waiting on the append lock"
                holder.execute("SELECT pg_advisory_unlock(%s)", (APPEND_LOCK,))
            records = await appends
            return list(records), [r.commits for r in replicas]
        finally:
            await asyncio.gather(*(r.close() for r in replicas))

    records, commits = asyncio.run(burst())

    assert sorted(r.seq for r in records) == list(range(1, 201))
    assert all(1 < c < 100 for c in commits)  # group commit still applies per replica
    by_seq = sorted(records, key=lambda r: r.seq)
    for before, after in itertools.pairwise(by_seq):
        assert after.prev_hash == before.hash
    switches = sum(a.body["replica"] != b.body["replica"] for a, b in itertools.pairwise(by_seq))
    assert switches >= 2  # the replicas' transactions interleaved on the one chain
    report = verify_chain(audit)
    assert (report.ok, report.records) == (True, 200)


def test_tampered_row_is_detected(server: PostgresServer, audit: AuditSettings) -> None:
    append_all(audit, 5)
    with server.superuser("regate") as conn:
        # An attacker with a superuser session can switch the triggers off.
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE audit_log SET body = %s WHERE seq = 3",
            (json.dumps({"n": 3, "outcome": "deny"}),),
        )
    report = verify_chain(audit)
    assert (report.ok, report.first_bad_seq, report.records) == (False, 3, 2)
    assert "content does not match its hash" in report.problem


def test_deleted_row_is_detected(server: PostgresServer, audit: AuditSettings) -> None:
    append_all(audit, 5)
    with server.superuser("regate") as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM audit_log WHERE seq = 2")
    report = verify_chain(audit)
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "record 2 is missing (next is 3)" in report.problem


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE audit_log SET body = '{}' WHERE seq = 2", id="update"),
        pytest.param("DELETE FROM audit_log WHERE seq = 2", id="delete"),
        pytest.param("TRUNCATE audit_log", id="truncate"),
    ],
)
def test_update_delete_truncate_are_refused(
    server: PostgresServer, audit: AuditSettings, statement: str
) -> None:
    append_all(audit, 3)
    with pytest.raises(psycopg.errors.RaiseException, match="audit_log is append-only"):
        as_owner(server, statement)
    report = verify_chain(audit)
    assert (report.ok, report.records) == (True, 3)


@pytest.fixture
def gateway_key(tmp_path: Path) -> tuple[CheckpointSigner, crypto.KeySet]:
    private, _ = crypto.write_key_pair(tmp_path / "keys", "gateway")
    signer = CheckpointSigner(crypto.load_private_key(private), every_records=3, every_s=3600)
    return signer, crypto.load_jwks(tmp_path / "keys" / "gateway.jwks.json")


def test_signed_checkpoints_ride_along_and_show_a_cut_tail(
    server: PostgresServer,
    audit: AuditSettings,
    gateway_key: tuple[CheckpointSigner, crypto.KeySet],
) -> None:
    signer, keys = gateway_key
    append_all(audit, 7, checkpoints=signer)  # checkpoints at 3 and 6, and 7 on close

    report = verify_chain(audit, keys)
    assert (report.ok, report.records, report.checkpoints, report.checkpointed) == (
        True,
        7,
        3,
        7,
    )
    newest = newest_checkpoint(audit)
    assert newest is not None
    assert read_checkpoint(newest, keys).seq == 7
    unchecked = verify_chain(audit)  # checkpoints present, no key to check them
    assert not unchecked.ok
    assert "no public key was given" in unchecked.problem

    with server.superuser("regate") as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM audit_log WHERE seq > 5")  # a chain cut short still links
    report = verify_chain(audit, keys)
    assert not report.ok
    assert "the log was truncated" in report.problem
    assert "only 5 remain" in report.problem


def test_unreadable_database_does_not_verify(server: PostgresServer) -> None:
    server.reset_database()
    report = verify_chain(server.audit_settings())  # nothing appended: no table yet
    assert not report.ok
    assert "no audit_log table" in report.problem
    wrong = server.audit_settings(password_env="REGATE_TEST_UNSET_PASSWORD", password_file=None)
    report = verify_chain(wrong)
    assert not report.ok
    assert "REGATE_TEST_UNSET_PASSWORD, which is not set" in report.problem


def test_a_lock_held_too_long_is_a_refusal_not_a_hang(
    server: PostgresServer, audit: AuditSettings
) -> None:
    append_all(audit, 1)  # the tables exist
    quick = server.audit_settings(timeout_s=1.0)

    async def scenario() -> None:
        store = AuditStore(PostgresChain(quick))
        try:
            with server.superuser("regate") as holder:
                holder.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))
                with pytest.raises(AuditUnavailable) as refused:
                    await store.append("decision", "blocked", {"n": 2})
                # The lock wait ran into the session's deadlines (lock or statement timeout).
                assert isinstance(refused.value.__cause__, psycopg.OperationalError)
                assert "timeout" in str(refused.value.__cause__)
                holder.execute("SELECT pg_advisory_unlock(%s)", (APPEND_LOCK,))
            assert (await store.append("decision", "after", {"n": 3})).seq == 2
        finally:
            await store.close()

    asyncio.run(scenario())
    assert verify_chain(audit).ok


def test_a_replica_stuck_inside_its_transaction_is_cut_off_by_the_server(
    server: PostgresServer, audit: AuditSettings
) -> None:
    append_all(audit, 1)
    # A session set up as a replica's (deadline 1 s) takes the append lock in a
    # transaction and then stalls, as a frozen gateway would.
    stuck = connect(server.audit_settings(timeout_s=1.0))
    try:
        stuck.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
        # Another replica (deadline 5 s) waits, then gets the lock once the server
        # has ended the stalled session.
        [record] = append_all(audit, 1, start=2)
        assert record.seq == 2
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            stuck.execute("SELECT 1")
    finally:
        stuck.close()
    assert verify_chain(audit).ok


def test_a_wrong_password_is_logged_at_start_and_refuses_calls(
    server: PostgresServer, audit: AuditSettings, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password-4b1d\n")
    source = PostgresSource(server.audit_settings(password_file=wrong))

    async def scenario() -> None:
        with capture_logs() as logs:
            store = source.open_store()
            try:
                with pytest.raises(AuditUnavailable):
                    await store.append("decision", "d-1", {"n": 1})
            finally:
                await store.close()
        unreachable = [e for e in logs if e["event"] == "audit_store_unreachable"]
        assert len(unreachable) >= 2  # at start, and again at the call
        assert unreachable[0]["store"] == str(source)
        assert "password authentication failed" in unreachable[0]["error"]
        assert "not-the-password-4b1d" not in repr(logs)

    asyncio.run(scenario())


def test_server_down_fails_the_batch_then_the_store_reconnects(
    server: PostgresServer, audit: AuditSettings
) -> None:
    async def scenario() -> None:
        store = AuditStore(PostgresChain(audit))
        try:
            await store.append("decision", "before", {"n": 1})
            server.stop()
            try:
                with pytest.raises(AuditUnavailable) as refused:
                    await store.append("decision", "during", {"n": 2})
                assert refused.value.status == 503
            finally:
                server.start()
            # The connection the store held died with the server: it reconnects.
            after = await store.append("decision", "after", {"n": 3})
            assert after.seq == 2
        finally:
            await store.close()

    asyncio.run(scenario())
    report = verify_chain(audit)
    assert (report.ok, report.records) == (True, 2)
    assert [r.decision_id for r in tail(audit, 5)] == ["before", "after"]


# --- two gateway processes on one chain -------------------------------------------


@pytest.fixture(scope="module")
def replicas(server: PostgresServer) -> Iterator[tuple[RunningStack, str]]:
    """A stack whose gateway uses PostgreSQL, plus a second gateway process beside it
    (same state dir and keys, its own port): two replicas behind one runner and OPA."""
    server.reset_database()
    running = start_stack("regate-pg-", extra_config=server.audit_config())
    try:
        settings = running.settings
        assert settings.admin is not None
        second_port = free_port()
        config_b = running.root / "regate-b.toml"
        config_b.write_text(
            running.config.read_text()
            .replace(f"127.0.0.1:{settings.gateway.listen.port}", f"127.0.0.1:{second_port}")
            .replace(f"127.0.0.1:{settings.admin.listen.port}", f"127.0.0.1:{free_port()}")
        )
        gateway = running.stack.service("gateway")
        running.stack.start_service(
            Service(
                "gateway-b",
                [sys.executable, "-m", "regate", "gateway", "--config", str(config_b)],
                type(gateway.address)(host="127.0.0.1", port=second_port),
                "/readyz",
            ),
            timeout_s=30,
        )
        yield running, f"http://127.0.0.1:{second_port}"
    finally:
        stop_stack(running)


def regate_audit(running: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regate", "audit", *args, "--config", str(running.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def decision_rows(server: PostgresServer, decision_ids: set[str]) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    with server.superuser("regate") as conn:
        for decision_id, kind in conn.execute(
            "SELECT decision_id, kind FROM audit_log WHERE decision_id = ANY(%s) ORDER BY seq",
            (list(decision_ids),),
        ):
            rows.setdefault(decision_id, []).append(kind)
    return rows


def test_two_gateway_processes_share_one_intact_chain(
    server: PostgresServer, replicas: tuple[RunningStack, str]
) -> None:
    running, second_url = replicas
    token = running.token()

    def call(i: int) -> tuple[int, str]:
        url = running.base_url if i % 2 == 0 else second_url
        with running.client() as client:
            response = client.post(
                f"{url}/v1/invoke/calculator/add",
                json={"arguments": {"a": i, "b": 1}},
                headers={"Authorization": f"Bearer {token}"},
            )
        return response.status_code, response.json()["decision_id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(40)))

    assert [status for status, _ in answers] == [200] * 40
    answered = {decision_id for _, decision_id in answers}
    rows = decision_rows(server, answered)
    assert {d: rows.get(d) for d in answered} == {d: ["decision", "receipt"] for d in answered}

    verify = regate_audit(running, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("OK:")
    assert f"postgresql://{ROLE}@127.0.0.1:{server.port}/regate" in verify.stdout
    assert server.password_file.read_text().strip() not in verify.stdout + verify.stderr

    newest = regate_audit(running, "tail", "-n", "3")
    assert newest.returncode == 0, newest.stderr
    lines = [json.loads(line) for line in newest.stdout.splitlines()]
    assert len(lines) == 3
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)

    exported = regate_audit(running, "export", "--kind", "receipt")
    assert exported.returncode == 0, exported.stderr
    receipts = {json.loads(line)["decision_id"] for line in exported.stdout.splitlines()}
    assert answered <= receipts


def readiness(running: RunningStack) -> tuple[int, bool]:
    with running.client() as client:
        ready = client.get("/readyz")
    return ready.status_code, ready.json()["checks"]["audit"]


def test_database_down_is_503_audit_unavailable_then_service_resumes(
    server: PostgresServer, replicas: tuple[RunningStack, str]
) -> None:
    running, _ = replicas
    assert running.invoke("calculator", "add", {"a": 1, "b": 2}).status_code == 200
    before = running.tool_counts("calculator.add")
    assert readiness(running) == (200, True)
    server.stop()
    try:
        response = running.invoke("calculator", "add", {"a": 1, "b": 2})

        assert response.status_code == 503
        assert response.json()["error"]["code"] == "audit_unavailable"
        assert "127.0.0.1" not in response.text  # 5xx bodies say nothing internal
        assert running.tool_counts("calculator.add") == before  # nothing ran unlogged
        # Out of rotation while the store is down, without a call having to fail first.
        assert readiness(running) == (503, False)
    finally:
        server.start()
    assert readiness(running) == (200, True)  # back without any call succeeding first
    log = running.stack.service("gateway").log_path
    assert log is not None
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    unreachable = [line for line in lines if line.get("event") == "audit_store_unreachable"]
    assert unreachable, "the gateway did not log that the audit store was unreachable"
    assert unreachable[-1]["store"] == f"postgresql://{ROLE}@127.0.0.1:{server.port}/regate"
    assert server.password_file.read_text().strip() not in log.read_text()

    # PostgreSQL is back: the same gateway records and answers again, on one chain.
    assert running.invoke("calculator", "add", {"a": 1, "b": 2}).status_code == 200
    verify = regate_audit(running, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_postgres_stopped_during_a_burst_on_both_replicas_loses_no_answered_call(
    server: PostgresServer, replicas: tuple[RunningStack, str]
) -> None:
    running, second_url = replicas
    token = running.token()
    completed = 0
    progress = threading.Condition()

    def call(i: int) -> tuple[int, dict[str, Any]]:
        nonlocal completed
        url = running.base_url if i % 2 == 0 else second_url
        with running.client() as client:
            response = client.post(
                f"{url}/v1/invoke/calculator/add",
                json={"arguments": {"a": i, "b": 1}},
                headers={"Authorization": f"Bearer {token}"},
            )
        with progress:
            completed += 1
            progress.notify_all()
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=4) as pool:
        burst = [pool.submit(call, i) for i in range(40)]
        with progress:  # stop PostgreSQL with calls in flight on both gateways
            assert progress.wait_for(lambda: completed >= 10, timeout=120)
        server.stop()
        try:
            during = [future.result(timeout=120) for future in burst]
        finally:
            server.start()
        after = list(pool.map(call, range(40, 50)))

    assert {status for status, _ in during} <= {200, 503}
    refused = [body for status, body in during if status == 503]
    assert refused, "no call was in flight when PostgreSQL stopped"
    assert {body["error"]["code"] for body in refused} == {"audit_unavailable"}
    assert [status for status, _ in after] == [200] * 10
    answered = {body["decision_id"] for status, body in during + after if status == 200}
    rows = decision_rows(server, answered)
    assert {d: rows.get(d) for d in answered} == {d: ["decision", "receipt"] for d in answered}
    verify = regate_audit(running, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
