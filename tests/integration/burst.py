"""A bounded burst of concurrent calls to a running stack, for the fault and crash tests.

Worker threads call one tool until told to stop, until `max_calls` calls have been
sent, or until `deadline_s` has passed — whichever comes first. Each answer is kept
with the phase the test was in when the call was sent, so a test can say "kill OPA",
"restart it", and then look at what callers saw in each phase.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from conftest import RunningStack


@dataclass(frozen=True)
class Answer:
    phase: str
    status: int | None  # None: the gateway gave no answer (connection refused or cut)
    body: Any

    @property
    def decision_id(self) -> str | None:
        if not isinstance(self.body, dict):
            return None
        if "decision_id" in self.body:
            return str(self.body["decision_id"])
        error = self.body.get("error")
        return error.get("decision_id") if isinstance(error, dict) else None

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error.get("code") if isinstance(error, dict) else None

    @property
    def cause(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error.get("cause") if isinstance(error, dict) else None


class Burst:
    def __init__(
        self,
        running: RunningStack,
        path: str,
        arguments: dict[str, Any],
        *,
        workers: int = 6,
        max_calls: int = 400,
        deadline_s: float = 90.0,
    ) -> None:
        self.phase = "before"
        self._running = running
        self._path = path
        self._arguments = arguments
        self._max_calls = max_calls
        self._deadline = time.monotonic() + deadline_s
        self._token = running.token()
        self._lock = threading.Lock()
        self._sent = 0
        self._answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"burst-{i}", daemon=True)
            for i in range(workers)
        ]

    def __enter__(self) -> Burst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.answers

    @property
    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def wait_for(
        self, what: str, predicate: Callable[[list[Answer]], bool], timeout_s: float = 30.0
    ) -> None:
        """Poll the answers until `predicate` holds; fail naming `what` if it never does."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.answers):
                return
            if not any(t.is_alive() for t in self._threads):
                break
            time.sleep(0.05)
        raise AssertionError(f"never saw {what}; answers: {summary(self.answers)}")

    def _claim(self) -> str | None:
        with self._lock:
            if self._stop.is_set() or self._sent >= self._max_calls:
                return None
            if time.monotonic() > self._deadline:
                return None
            self._sent += 1
            return self.phase

    def _work(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"}
        with self._running.client() as client:
            while (phase := self._claim()) is not None:
                try:
                    response = client.post(
                        self._path, json={"arguments": self._arguments}, headers=headers
                    )
                except httpx.TransportError:
                    with self._lock:
                        self._answers.append(Answer(phase, None, None))
                    return  # the gateway is gone: this worker is done
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                with self._lock:
                    self._answers.append(Answer(phase, response.status_code, body))


def summary(answers: list[Answer]) -> dict[str, int]:
    """How many answers of each (phase, status, cause), for failure messages."""
    counts: dict[str, int] = {}
    for a in answers:
        key = f"{a.phase}:{a.status}:{a.cause or a.error_code or ''}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def all_audit_rows(db: Path) -> list[dict[str, Any]]:
    """Every record of the audit store, in chain order."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, kind, decision_id, body FROM audit_log ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [
        {"seq": seq, "kind": kind, "decision_id": decision_id, **json.loads(body)}
        for seq, kind, decision_id, body in rows
    ]


def receipts_without_an_allow_before_them(rows: list[dict[str, Any]]) -> list[int]:
    """The seq of every receipt that no earlier `allow` decision of its id precedes."""
    allowed: set[str] = set()
    orphans = []
    for row in rows:
        if row["kind"] == "decision" and row.get("outcome") == "allow":
            allowed.add(row["decision_id"])
        elif row["kind"] == "receipt" and row["decision_id"] not in allowed:
            orphans.append(row["seq"])
    return orphans
