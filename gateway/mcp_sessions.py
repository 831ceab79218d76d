"""MCP sessions: issued on `initialize`, bound to the caller, ended by DELETE or idleness.

A session id is 256 random bits, so it cannot be guessed; it is still bound to
the token's `sub` and `iss`, so a leaked id is useless to another caller. The
store is in memory (one gateway process) and bounded: a caller who opens too
many sessions loses its least recently used ones, never anybody else's.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.auth import Caller
from gateway.mcp_errors import SessionForbidden, SessionNotFound

IDLE_TTL_S = 3600.0
MAX_SESSIONS_PER_CALLER = 64
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    sub: str
    iss: str
    protocol_version: str
    last_used: float


class SessionStore:
    def __init__(
        self,
        *,
        idle_ttl_s: float = IDLE_TTL_S,
        max_per_caller: int = MAX_SESSIONS_PER_CALLER,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        self._idle_ttl_s = idle_ttl_s
        self._max_per_caller = max_per_caller
        self._max_sessions = max_sessions
        self._clock = clock
        self._new_id = new_id
        self._sessions: dict[str, Session] = {}  # in least-recently-used order

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, caller: Caller, protocol_version: str) -> Session:
        self._expire()
        mine = [s for s in self._sessions.values() if (s.sub, s.iss) == (caller.sub, caller.iss)]
        for old in mine[: max(0, len(mine) - self._max_per_caller + 1)]:
            del self._sessions[old.id]
        while len(self._sessions) >= self._max_sessions:
            del self._sessions[next(iter(self._sessions))]
        session = Session(
            id=self._new_id(),
            sub=caller.sub,
            iss=caller.iss,
            protocol_version=protocol_version,
            last_used=self._clock(),
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, caller: Caller) -> Session:
        """The caller's live session `session_id`, marked as used; or raise."""
        self._expire()
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFound(
                "unknown or expired MCP session; start a new one with 'initialize'"
            )
        if (session.sub, session.iss) != (caller.sub, caller.iss):
            raise SessionForbidden(
                "this MCP session belongs to another caller; start your own with 'initialize'"
            )
        session.last_used = self._clock()
        self._sessions[session_id] = self._sessions.pop(session_id)  # now most recent
        return session

    def end(self, session_id: str, caller: Caller) -> None:
        self.get(session_id, caller)
        del self._sessions[session_id]

    def _expire(self) -> None:
        deadline = self._clock() - self._idle_ttl_s
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.last_used > deadline:
                return
            del self._sessions[oldest.id]
