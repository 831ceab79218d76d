"""Call counters that feed `usage` in the policy input: per caller, and per (caller, tool)."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K")
WINDOW_S = 60.0
SWEEP_EVERY = 10_000  # records between sweeps of callers that went quiet


@dataclass(frozen=True)
class Usage:
    """Calls made in the window *before* this one (so a limit of n lets n through)."""

    calls_last_minute: int  # by this caller, to any tool
    tool_calls_last_minute: int  # by this caller, to this tool of this agent


class UsageCounter:
    """Sliding one-minute windows, in memory, in one process.

    `record` counts a call and reads the counts in one step with no `await` in
    between, so a burst of parallel calls is counted in full: the nth call of a
    burst sees n-1 before it, whatever order they reach the policy in. Every call
    counts, whether policy then allows it or not.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls: defaultdict[str, deque[float]] = defaultdict(deque)
        self._tool_calls: defaultdict[tuple[str, str, str], deque[float]] = defaultdict(deque)
        self._since_sweep = 0

    def record(self, caller: str, agent_id: str, tool: str) -> Usage:
        """Count this call and return the usage before it."""
        now = self._clock()
        usage = Usage(
            calls_last_minute=_count_and_add(self._calls[caller], now),
            tool_calls_last_minute=_count_and_add(self._tool_calls[caller, agent_id, tool], now),
        )
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self._sweep(now)
        return usage

    def _sweep(self, now: float) -> None:
        """Forget callers and tools with no call in the window (memory stays bounded)."""
        self._since_sweep = 0
        self._calls = _recent(self._calls, now)
        self._tool_calls = _recent(self._tool_calls, now)


def _recent(table: defaultdict[K, deque[float]], now: float) -> defaultdict[K, deque[float]]:
    return defaultdict(deque, {k: v for k, v in table.items() if v and v[-1] > now - WINDOW_S})


def _count_and_add(calls: deque[float], now: float) -> int:
    while calls and calls[0] <= now - WINDOW_S:
        calls.popleft()
    before = len(calls)
    calls.append(now)
    return before
