"""MCP sessions: bound to their caller, ended, expired, bounded."""

from __future__ import annotations

from itertools import count

import pytest

from gateway.auth import Caller
from gateway.mcp_errors import SessionForbidden, SessionNotFound
from gateway.mcp_sessions import SessionStore

ALICE = Caller(sub="alice", iss="https://idp.one", claims={})
ALICE_ELSEWHERE = Caller(sub="alice", iss="https://idp.two", claims={})
BOB = Caller(sub="bob", iss="https://idp.one", claims={})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(*, max_per_caller: int = 64, max_sessions: int = 10_000) -> SessionStore:
    ids = count()
    return SessionStore(
        clock=Clock(),
        new_id=lambda: f"s{next(ids)}",
        max_per_caller=max_per_caller,
        max_sessions=max_sessions,
    )


def test_a_session_belongs_to_its_caller() -> None:
    sessions = store()
    session = sessions.create(ALICE, "2025-06-18")

    assert sessions.get(session.id, ALICE).protocol_version == "2025-06-18"
    for other in (BOB, ALICE_ELSEWHERE):  # same sub from another issuer is someone else
        with pytest.raises(SessionForbidden):
            sessions.get(session.id, other)


def test_unknown_and_ended_sessions_are_not_found() -> None:
    sessions = store()
    session = sessions.create(ALICE, "2025-06-18")

    with pytest.raises(SessionNotFound):
        sessions.get("nope", ALICE)
    with pytest.raises(SessionForbidden):
        sessions.end(session.id, BOB)
    sessions.end(session.id, ALICE)
    with pytest.raises(SessionNotFound):
        sessions.get(session.id, ALICE)


def test_idle_sessions_expire_and_use_keeps_them_alive() -> None:
    clock = Clock()
    sessions = SessionStore(clock=clock, idle_ttl_s=60)
    kept = sessions.create(ALICE, "2025-06-18")
    idle = sessions.create(BOB, "2025-06-18")

    clock.now += 50
    sessions.get(kept.id, ALICE)
    clock.now += 50

    assert sessions.get(kept.id, ALICE)
    with pytest.raises(SessionNotFound):
        sessions.get(idle.id, BOB)


def test_a_caller_over_its_cap_loses_its_own_oldest_session() -> None:
    sessions = store(max_per_caller=2)
    bobs = sessions.create(BOB, "v")
    first, second, third = (sessions.create(ALICE, "v") for _ in range(3))

    with pytest.raises(SessionNotFound):
        sessions.get(first.id, ALICE)
    assert sessions.get(second.id, ALICE)
    assert sessions.get(third.id, ALICE)
    assert sessions.get(bobs.id, BOB)


def test_the_store_is_bounded() -> None:
    sessions = store(max_sessions=3)
    for _ in range(5):
        sessions.create(BOB, "v")

    assert len(sessions) == 3


def test_ids_are_long_and_random() -> None:
    sessions = SessionStore()
    ids = {sessions.create(ALICE, "v").id for _ in range(50)}

    assert len(ids) == 50
    assert all(len(i) >= 43 and i.isascii() and i.isprintable() for i in ids)
