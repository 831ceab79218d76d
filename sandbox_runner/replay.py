"""Each grant runs at most once: used grant ids are remembered until they expire."""

from __future__ import annotations

import time
from collections.abc import Callable


class ReplayGuard:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: dict[str, int] = {}

    def first_use(self, grant_id: str, expires_at: int) -> bool:
        now = self._clock()
        if len(self._seen) > 1024:
            self._seen = {k: exp for k, exp in self._seen.items() if exp >= now}
        if grant_id in self._seen:
            return False
        self._seen[grant_id] = expires_at
        return True
