"""The decision log read from the PostgreSQL audit store: the same answers as SQLite's.

A throwaway PostgreSQL server (tests/postgres_cluster.py), records written by the
real `AuditStore` over `PostgresChain`, read by `PostgresDecisionLog`."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from conftest import free_port
from decision_records import FILTER_CASES, fill
from postgres_cluster import PostgresServer, postgres_server  # noqa: F401 (fixture)

from gateway.audit import AuditStore
from gateway.audit_postgres import PostgresChain
from gateway.decision_log import DecisionNotFound, DecisionQuery, PostgresDecisionLog
from gateway.errors import AuditUnavailable
from regate.settings import AuditSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(server: PostgresServer) -> AuditSettings:
    audit = server.audit_settings()

    async def build() -> None:
        store = AuditStore(PostgresChain(audit))
        await fill(store)
        await store.close()

    asyncio.run(build())
    return audit


@pytest.mark.parametrize(("query", "expected"), FILTER_CASES)
def test_filters_match_sqlite(
    settings: AuditSettings, query: dict[str, Any], expected: list[str]
) -> None:
    page = asyncio.run(PostgresDecisionLog(settings).search(DecisionQuery(**query)))
    assert [d.decision_id for d in page.decisions] == expected


def test_paging_and_receipts(settings: AuditSettings) -> None:
    log = PostgresDecisionLog(settings)
    first = asyncio.run(log.search(DecisionQuery(limit=3)))
    assert [d.decision_id for d in first.decisions] == ["d5", "d4", "d3"]
    rest = asyncio.run(log.search(DecisionQuery(limit=3, before=first.next_before)))
    assert [d.decision_id for d in rest.decisions] == ["d2", "d1"]
    assert rest.next_before is None
    ran = {d.decision_id: d.ran for d in first.decisions + rest.decisions}
    assert ran == {"d1": True, "d2": None, "d3": None, "d4": False, "d5": None}

    trail = asyncio.run(log.get("d1"))
    assert trail.receipt is not None
    assert trail.receipt.body["ok"] is True
    assert trail.receipt.seq > trail.decision.seq
    with pytest.raises(DecisionNotFound):
        asyncio.run(log.get("a1"))  # an admin record, not a decision


def test_an_unreachable_database_is_503_without_the_password(
    settings: AuditSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = dataclasses.replace(settings, dsn=f"host=127.0.0.1 port={free_port()} dbname=x")
    with pytest.raises(AuditUnavailable) as caught:
        asyncio.run(PostgresDecisionLog(gone).search(DecisionQuery()))
    assert caught.value.status == 503
    password = settings.password_file.read_text().strip() if settings.password_file else ""
    assert password
    assert password not in caught.value.message
    assert password not in capsys.readouterr().out
