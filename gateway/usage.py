"""Call counters that feed `usage` in the policy input: per caller, and per (caller, tool)."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
WINDOW_S = 60.0
SWEEP_EVERY = 10_000  # records between sweeps of callers that went quiet


@dataclass(frozen=True)
class Usage:
    """Units used in the window *before* this call (so a limit of n lets n through).

    A call uses one unit when it comes in, plus the extra units of its policy's
    `rate_cost` obligation once it is allowed to run (`UsageCounter.charge`).
    """

    calls_last_minute: int  # by this caller, to any tool
    tool_calls_last_minute: int  # by this caller, to this tool of this agent


@dataclass
class _Window:
    """Units used in the last minute: (time, units) events and their running total."""

    events: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def used(self, now: float) -> int:
        while self.events and self.events[0][0] <= now - WINDOW_S:
            self.total -= self.events.popleft()[1]
        return self.total

    def add(self, now: float, units: int) -> None:
        self.events.append((now, units))
        self.total += units

    def quiet(self, now: float) -> bool:
        return not self.events or self.events[-1][0] <= now - WINDOW_S


class UsageCounter:
    """Sliding one-minute windows, in memory, in one process.

    `record` counts a call and reads the counts in one step with no `await` in
    between, so a burst of parallel calls is counted in full: the nth call of a
    burst sees n-1 before it, whatever order they reach the policy in. Every call
    counts, whether policy then allows it or not.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls: defaultdict[str, _Window] = defaultdict(_Window)
        self._tool_calls: defaultdict[tuple[str, str, str], _Window] = defaultdict(_Window)
        self._since_sweep = 0

    def record(self, caller: str, agent_id: str, tool: str) -> Usage:
        """Count this call (one unit) and return the usage before it."""
        now = self._clock()
        windows = self._calls[caller], self._tool_calls[caller, agent_id, tool]
        usage = Usage(windows[0].used(now), windows[1].used(now))
        for window in windows:
            window.add(now, 1)
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self._sweep(now)
        return usage

    def charge(self, caller: str, agent_id: str, tool: str, units: int) -> None:
        """Add `units` more to a call already recorded (its rate cost beyond the first)."""
        if units <= 0:
            return
        now = self._clock()
        self._calls[caller].add(now, units)
        self._tool_calls[caller, agent_id, tool].add(now, units)

    def _sweep(self, now: float) -> None:
        """Forget callers and tools with no call in the window (memory stays bounded)."""
        self._since_sweep = 0
        self._calls = _recent(self._calls, now)
        self._tool_calls = _recent(self._tool_calls, now)


def _recent(table: defaultdict[K, _Window], now: float) -> defaultdict[K, _Window]:
    return defaultdict(_Window, {k: w for k, w in table.items() if not w.quiet(now)})
