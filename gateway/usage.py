"""Per-caller call counters that feed `usage` in the policy input."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable

WINDOW_S = 60.0


class UsageCounter:
    """Calls per caller in the last minute (sliding window, in memory, one process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls: defaultdict[str, deque[float]] = defaultdict(deque)

    def record(self, caller: str) -> int:
        """Count this call and return how many calls `caller` made in the window before it."""
        now = self._clock()
        calls = self._calls[caller]
        while calls and calls[0] <= now - WINDOW_S:
            calls.popleft()
        before = len(calls)
        calls.append(now)
        return before
