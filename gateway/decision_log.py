"""Reading the decision log: search decisions, and one decision with what is chained to it.

The audit store (gateway/audit.py) writes; this module only reads, behind a small
interface (`DecisionLog`: `search`, `get`) so that the console and the admin API do
not care which store holds the records: `SqliteDecisionLog` for the embedded store
(WAL: readers never block the writer), `PostgresDecisionLog` for the shared one.
Each query runs on its own read-only connection in a worker thread, so the event
loop keeps serving; a store that cannot be read is a 503 `audit_unavailable`.

Filters are exact matches on the caller's `sub`, the agent, the tool and the
outcome, plus a time range on when the record was written; pages are keyed by the
record's sequence number (`before`), newest first, so a page never shifts when new
decisions arrive.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import structlog

from gateway import audit_postgres
from gateway.errors import AuditUnavailable
from regate.errors import BadRequest, NotFound
from regate.settings import AuditSettings, Settings

OUTCOMES = ("allow", "deny", "require_approval", "error")
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_FILTER_CHARS = 256
DECISION_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")

log = structlog.get_logger("regate.decision_log")


class DecisionNotFound(NotFound):
    code = "decision_not_found"


@dataclass(frozen=True)
class DecisionQuery:
    """What to look for; every field left None matches everything."""

    caller: str | None = None
    agent: str | None = None
    tool: str | None = None
    outcome: str | None = None
    since: datetime | None = None  # inclusive, aware
    until: datetime | None = None  # exclusive, aware
    before: int | None = None  # only records older than this sequence number
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        for name in ("caller", "agent", "tool"):
            value = getattr(self, name)
            if value is not None and not 0 < len(value) <= MAX_FILTER_CHARS:
                raise BadRequest(f'"{name}" must be 1 to {MAX_FILTER_CHARS} characters')
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise BadRequest(f'"outcome" must be one of {", ".join(OUTCOMES)}')
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise BadRequest(f'"{name}" needs a time zone, e.g. 2026-01-31T09:00:00Z')
        if self.since and self.until and self.since >= self.until:
            raise BadRequest('"since" must be earlier than "until"')
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadRequest(f'"limit" must be between 1 and {MAX_LIMIT}')
        if self.before is not None and self.before < 1:
            raise BadRequest('"before" must be a positive record number')


@dataclass(frozen=True)
class DecisionSummary:
    """One row of the decision list."""

    seq: int
    decision_id: str
    recorded_at: str
    outcome: str
    status: int | None
    code: str
    caller: str | None
    agent_id: str | None
    tool: str | None
    policy_revision: str | None
    ran: bool | None  # None: no receipt (not allowed, or not run); else whether it ran ok

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "decision_id": self.decision_id,
            "recorded_at": self.recorded_at,
            "outcome": self.outcome,
            "status": self.status,
            "code": self.code,
            "caller": self.caller,
            "agent_id": self.agent_id,
            "tool": self.tool,
            "policy_revision": self.policy_revision,
            "ran_ok": self.ran,
        }


@dataclass(frozen=True)
class DecisionPage:
    decisions: tuple[DecisionSummary, ...]
    next_before: int | None  # pass as `before` for the next (older) page; None: no more

    def as_json(self) -> dict[str, Any]:
        return {
            "decisions": [d.as_json() for d in self.decisions],
            "next_before": self.next_before,
        }


@dataclass(frozen=True)
class LoggedRecord:
    """One audit record as stored: its place in the chain and its body."""

    seq: int
    kind: str
    recorded_at: str
    body: Mapping[str, Any]
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "recorded_at": self.recorded_at,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
            "body": dict(self.body),
        }


@dataclass(frozen=True)
class DecisionTrail:
    """A decision, the receipt chained to it (if it ran), and any other record under its id."""

    decision_id: str
    decision: LoggedRecord
    receipt: LoggedRecord | None
    others: tuple[LoggedRecord, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "decision": self.decision.as_json(),
            "receipt": self.receipt.as_json() if self.receipt else None,
            "others": [r.as_json() for r in self.others],
        }


class DecisionLog(Protocol):
    async def search(self, query: DecisionQuery) -> DecisionPage: ...

    async def get(self, decision_id: str) -> DecisionTrail: ...


def check_decision_id(decision_id: str) -> str:
    if not DECISION_ID.match(decision_id):
        raise BadRequest("a decision id is a UUID like 7a1e0c52-…; letters, digits and '-' only")
    return decision_id


def stored_time(moment: datetime) -> str:
    """`moment` the way the audit store writes `recorded_at`, so strings compare as times."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class SqlDecisionLog:
    """The queries, once for both stores; a subclass says how to run them and how its
    SQL reads a field of a record's JSON body."""

    placeholder = "?"

    async def search(self, query: DecisionQuery) -> DecisionPage:
        return await asyncio.to_thread(self._search, query)

    async def get(self, decision_id: str) -> DecisionTrail:
        check_decision_id(decision_id)
        return await asyncio.to_thread(self._get, decision_id)

    def field(self, alias: str, *path: str) -> str:
        """SQL for the text at `path` in the JSON body of the record `alias`."""
        raise NotImplementedError

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _search(self, query: DecisionQuery) -> DecisionPage:
        p = self.placeholder
        where = ["d.kind = 'decision'"]
        params: list[Any] = []
        for path, value in (
            (("caller", "sub"), query.caller),
            (("target", "agent_id"), query.agent),
            (("tool",), query.tool),
            (("outcome",), query.outcome),
        ):
            if value is not None:
                where.append(f"{self.field('d', *path)} = {p}")
                params.append(value)
        # recorded_at is always UTC isoformat with microseconds: it sorts as text.
        bounds: tuple[tuple[str, str | int | None], ...] = (
            (f"d.recorded_at >= {p}", stored_time(query.since) if query.since else None),
            (f"d.recorded_at < {p}", stored_time(query.until) if query.until else None),
            (f"d.seq < {p}", query.before),
        )
        for condition, bound in bounds:
            if bound is not None:
                where.append(condition)
                params.append(bound)
        # Only the fixed expressions above are joined in; every value is a parameter.
        # One more row than asked for says whether an older page exists.
        ok = self.field("r", "ok")
        ran = f"(SELECT {ok} FROM audit_log r WHERE r.decision_id = d.decision_id AND r.kind = 'receipt' LIMIT 1)"  # noqa: E501, S608
        conditions = " AND ".join(where)
        sql = f"SELECT d.seq, d.decision_id, d.recorded_at, d.body, {ran} FROM audit_log d WHERE {conditions} ORDER BY d.seq DESC LIMIT {p}"  # noqa: E501, S608
        params.append(query.limit + 1)
        rows = self._rows(sql, params)
        summaries = tuple(_summary(*row) for row in rows[: query.limit])
        more = len(rows) > query.limit
        return DecisionPage(summaries, summaries[-1].seq if more and summaries else None)

    def _get(self, decision_id: str) -> DecisionTrail:
        p = self.placeholder
        sql = f"SELECT seq, kind, recorded_at, body, prev_hash, hash FROM audit_log WHERE decision_id = {p} ORDER BY seq"  # noqa: E501, S608
        rows = self._rows(sql, (decision_id,))
        records = [
            LoggedRecord(seq, kind, at, json.loads(body), prev, digest)
            for seq, kind, at, body, prev, digest in rows
        ]
        decision = next((r for r in records if r.kind == "decision"), None)
        if decision is None:
            raise DecisionNotFound(
                f"no decision {decision_id!r} in the log; the decisions list shows the ids",
                decision_id=decision_id,
            )
        receipt = next((r for r in records if r.kind == "receipt"), None)
        others = tuple(r for r in records if r is not decision and r is not receipt)
        return DecisionTrail(decision_id, decision, receipt, others)


class SqliteDecisionLog(SqlDecisionLog):
    """The decision log in the embedded SQLite audit store, on its own read-only
    connection per query."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def field(self, alias: str, *path: str) -> str:
        return f"json_extract({alias}.body, '$.{'.'.join(path)}')"

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if not self._path.exists():
            return []  # nothing recorded yet: an empty log, not an error
        try:
            conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise _unreadable(str(self._path), exc) from exc


class PostgresDecisionLog(SqlDecisionLog):
    """The decision log in the PostgreSQL audit store shared by several gateways; a
    read-only connection per query, with the store's deadlines."""

    placeholder = "%s"

    def __init__(self, settings: AuditSettings) -> None:
        self._settings = settings

    def field(self, alias: str, *path: str) -> str:
        return f"({alias}.body::jsonb #>> '{{{','.join(path)}}}')"

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            with audit_postgres.connect(self._settings, read_only=True) as conn:
                found = conn.execute("SELECT to_regclass('audit_log')::text").fetchone()
                if found is None or found[0] is None:
                    return []  # no gateway has written yet
                return conn.execute(sql, params).fetchall()
        except (audit_postgres.AuditStoreError, psycopg.Error) as exc:
            raise _unreadable(audit_postgres.describe(self._settings), exc) from exc


def open_decision_log(settings: Settings) -> DecisionLog:
    """The decision log of the audit store the configuration names (`[audit] store`)."""
    if settings.audit.store == "postgres":
        return PostgresDecisionLog(settings.audit)
    return SqliteDecisionLog(settings.gateway.audit_db)


def _unreadable(where: str, exc: Exception) -> AuditUnavailable:
    # The detail (never a password: `describe` leaves it out) goes to the log.
    log.error("decision_log_unreadable", store=where, error=str(exc))
    return AuditUnavailable("the decision log cannot be read right now; retry in a moment")


def _summary(
    seq: int, decision_id: str, recorded_at: str, raw: str, ran: int | str | None
) -> DecisionSummary:
    body = json.loads(raw)
    caller = body.get("caller") or {}
    target = body.get("target") or {}
    policy = body.get("policy") or {}
    status = body.get("status")
    return DecisionSummary(
        seq=seq,
        decision_id=decision_id,
        recorded_at=recorded_at,
        outcome=str(body.get("outcome", "")),
        status=status if isinstance(status, int) else None,
        code=str(body.get("code", "")),
        caller=caller.get("sub") if isinstance(caller, dict) else None,
        agent_id=target.get("agent_id") if isinstance(target, dict) else None,
        tool=body.get("tool") if isinstance(body.get("tool"), str) else None,
        policy_revision=policy.get("policy_revision") if isinstance(policy, dict) else None,
        # SQLite's json_extract gives 1/0 for a JSON boolean, PostgreSQL's #>> "true"/"false".
        ran=None if ran is None else ran in (1, "true"),
    )


def parse_time(text: str, name: str, *, zone: tzinfo | None = None) -> datetime:
    """An RFC 3339 time; a time without an offset is read in `zone` if one is given
    (the console's form sends the viewer's zone), else refused."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(
            f'"{name}" is not a time; use RFC 3339, e.g. 2026-01-31T09:00:00Z'
        ) from exc
    if moment.utcoffset() is None:
        if zone is None:
            raise BadRequest(f'"{name}" needs a time zone, e.g. 2026-01-31T09:00:00Z')
        moment = moment.replace(tzinfo=zone)
    return moment


def viewer_zone(name: str) -> tzinfo:
    """The IANA zone the console's form reports for the viewer (e.g. Europe/Paris)."""
    try:
        if len(name) > 64:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise BadRequest('"tz" must be an IANA time zone such as Europe/Paris or UTC') from exc


def query_from_params(params: Mapping[str, str]) -> DecisionQuery:
    """A `DecisionQuery` from query-string parameters (empty ones are ignored). Times
    without an offset are read in the zone `tz` names, when it is given."""
    allowed = {"caller", "agent", "tool", "outcome", "since", "until", "before", "limit", "tz"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameters {unknown}; filter with {sorted(allowed - {'tz'})}")

    def text(name: str) -> str | None:
        value = params.get(name, "").strip()
        return value or None

    def number(name: str) -> int | None:
        value = text(name)
        if value is None:
            return None
        if not value.isdigit() or len(value) > 18:
            raise BadRequest(f'"{name}" must be a whole number')
        return int(value)

    since, until, limit = text("since"), text("until"), number("limit")
    zone_name = text("tz")
    zone = viewer_zone(zone_name) if zone_name else None
    return DecisionQuery(
        caller=text("caller"),
        agent=text("agent"),
        tool=text("tool"),
        outcome=text("outcome"),
        since=parse_time(since, "since", zone=zone) if since else None,
        until=parse_time(until, "until", zone=zone) if until else None,
        before=number("before"),
        limit=DEFAULT_LIMIT if limit is None else limit,
    )
