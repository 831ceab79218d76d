"""Reading the decision log (gateway/decision_log.py) from a real SQLite audit store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from decision_records import FILTER_CASES, fill

from gateway.audit import AuditStore
from gateway.decision_log import (
    DecisionNotFound,
    DecisionQuery,
    SqliteDecisionLog,
    query_from_params,
)
from regate.errors import BadRequest


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> SqliteDecisionLog:
    """One store for the module: every test only reads it."""
    path = tmp_path_factory.mktemp("decisions") / "audit.db"

    async def build() -> None:
        store = AuditStore(path)
        await fill(store)
        await store.close()

    asyncio.run(build())
    return SqliteDecisionLog(path)


def ids(log: SqliteDecisionLog, **query: Any) -> list[str]:
    page = asyncio.run(log.search(DecisionQuery(**query)))
    return [d.decision_id for d in page.decisions]


@pytest.mark.parametrize(("query", "expected"), FILTER_CASES)
def test_filters(log: SqliteDecisionLog, query: dict[str, Any], expected: list[str]) -> None:
    assert ids(log, **query) == expected


def test_time_range_compares_as_times_whatever_the_offset(log: SqliteDecisionLog) -> None:
    now = datetime.now(UTC)
    assert len(ids(log, since=now - timedelta(minutes=5))) == 5
    assert ids(log, since=now + timedelta(minutes=5)) == []
    assert ids(log, until=now - timedelta(minutes=5)) == []
    # The same instant written in another zone selects the same records.
    tokyo = (now + timedelta(minutes=5)).astimezone(ZoneInfo("Asia/Tokyo"))
    assert len(ids(log, until=tokyo)) == 5
    assert ids(log, until=(now - timedelta(minutes=5)).astimezone(ZoneInfo("Asia/Tokyo"))) == []


def test_pages_are_keyed_by_sequence_and_never_overlap(log: SqliteDecisionLog) -> None:
    first = asyncio.run(log.search(DecisionQuery(limit=2)))
    assert [d.decision_id for d in first.decisions] == ["d5", "d4"]
    assert first.next_before is not None
    second = asyncio.run(log.search(DecisionQuery(limit=2, before=first.next_before)))
    assert [d.decision_id for d in second.decisions] == ["d3", "d2"]
    third = asyncio.run(log.search(DecisionQuery(limit=2, before=second.next_before)))
    assert [d.decision_id for d in third.decisions] == ["d1"]
    assert third.next_before is None  # the last page says so


def test_summary_says_whether_the_tool_ran_ok(log: SqliteDecisionLog) -> None:
    page = asyncio.run(log.search(DecisionQuery()))
    by_id = {d.decision_id: d for d in page.decisions}
    assert by_id["d1"].ran is True
    assert by_id["d4"].ran is False  # its receipt says ok: false
    assert by_id["d2"].ran is None  # denied: nothing ran, no receipt
    assert by_id["d1"].caller == "alice"
    assert by_id["d1"].agent_id == "calculator"
    assert by_id["d1"].policy_revision == "rev-7"
    assert by_id["d2"].status == 403


def test_detail_holds_the_decision_and_its_chained_receipt(log: SqliteDecisionLog) -> None:
    trail = asyncio.run(log.get("d1"))
    assert trail.decision.kind == "decision"
    assert trail.decision.body["input"] == {"arguments": {"a": 1}}
    assert trail.receipt is not None
    assert trail.receipt.body["ok"] is True
    # The receipt comes after its decision in the chain.
    assert trail.receipt.seq > trail.decision.seq
    assert len(trail.decision.hash) == 64
    assert trail.as_json()["receipt"]["body"]["decision_id"] == "d1"


def test_denied_decision_has_no_receipt(log: SqliteDecisionLog) -> None:
    assert asyncio.run(log.get("d2")).receipt is None


@pytest.mark.parametrize("decision_id", ["nope", "a1"])  # unknown, or not a decision
def test_unknown_decision_is_404(log: SqliteDecisionLog, decision_id: str) -> None:
    with pytest.raises(DecisionNotFound) as caught:
        asyncio.run(log.get(decision_id))
    assert caught.value.status == 404


def test_a_store_not_written_yet_is_an_empty_log(tmp_path: Path) -> None:
    log = SqliteDecisionLog(tmp_path / "missing.db")
    assert asyncio.run(log.search(DecisionQuery())).decisions == ()
    with pytest.raises(DecisionNotFound):
        asyncio.run(log.get("d1"))
    assert not (tmp_path / "missing.db").exists()  # reading never creates it


def test_query_from_params_reads_the_form() -> None:
    query = query_from_params(
        {
            "caller": " alice ",
            "agent": "",
            "outcome": "deny",
            "since": "2026-11-22T09:00",
            "tz": "Europe/Paris",
            "limit": "20",
            "before": "99",
        }
    )
    assert query.caller == "alice"
    assert query.agent is None  # an empty field is no filter
    assert query.since == datetime(2026, 11, 22, 8, 0, tzinfo=UTC)  # Paris is UTC+1 in November
    assert (query.limit, query.before) == (20, 99)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"since": "yesterday"}, "RFC 3339"),
        ({"since": "2026-11-22T09:00"}, "time zone"),  # no offset, no tz: refused, not guessed
        ({"since": "2026-11-22T10:00Z", "until": "2026-11-22T09:00Z"}, "earlier"),
        ({"tz": "Mars/Olympus"}, "IANA"),
        ({"tz": "../../etc/passwd"}, "IANA"),
        ({"limit": "0"}, "between 1 and 200"),
        ({"limit": "201"}, "between 1 and 200"),
        ({"limit": "-1"}, "whole number"),
        ({"before": "x"}, "whole number"),
        ({"caller": "x" * 257}, "1 to 256"),
        ({"sort": "seq"}, "unknown parameters"),
    ],
)
def test_bad_filters_are_refused_with_a_clear_message(params: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        query_from_params(params)
