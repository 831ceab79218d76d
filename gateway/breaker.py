"""A circuit breaker, so that a dead dependency (OPA) fails calls at once.

closed     calls go through; `failure_threshold` consecutive failures open it.
open       calls are refused at once (`BreakerOpen`), until `cooldown_s` has passed.
half-open  one call goes through as a probe, the others are still refused; a
           success closes the breaker, a failure opens it for another cool-down.

Recovery needs no operator: the first call (or readiness check) after the cool-down
is the probe. The breaker knows nothing about HTTP; its user says what a failure is.
Not thread-safe: one event loop owns it, and nothing here awaits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

log = structlog.get_logger("regate.breaker")

State = Literal["closed", "open", "half_open"]


class BreakerOpen(Exception):
    """The breaker refused the call; `retry_in_s` says when it will let a probe through."""

    def __init__(self, name: str, retry_in_s: float, failures: int) -> None:
        super().__init__(f"{name} circuit breaker is open; next probe in {retry_in_s:.1f} s")
        self.retry_in_s = retry_in_s
        self.failures = failures


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s > 0")
        self._state: State = "closed"
        self._failures = 0  # consecutive, since the last success
        self._opened_at = 0.0
        self._probing = False  # a half-open probe is in flight

    @property
    def state(self) -> State:
        if self._state == "open" and self._retry_in() <= 0:
            return "half_open"
        return self._state

    def admit(self) -> None:
        """Let one call through, or raise `BreakerOpen`. Every admitted call must end
        in exactly one of `succeeded`, `failed` or `abandoned`."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self._probing:
            if self._state == "open":
                log.info("breaker_half_open", breaker=self.name)
            self._state, self._probing = "half_open", True
            return
        raise BreakerOpen(self.name, max(self._retry_in(), 0.0), self._failures)

    def succeeded(self) -> None:
        if self._state != "closed":
            log.warning("breaker_closed", breaker=self.name, after_failures=self._failures)
        self._state, self._failures, self._probing = "closed", 0, False

    def failed(self) -> None:
        self._failures += 1
        probe_failed = self._state == "half_open"
        if probe_failed or (self._state == "closed" and self._failures >= self.failure_threshold):
            self._state, self._opened_at, self._probing = "open", self.clock(), False
            log.error(
                "breaker_opened",
                breaker=self.name,
                consecutive_failures=self._failures,
                retry_in_s=self.cooldown_s,
            )

    def abandoned(self) -> None:
        """The call ended with no verdict on the dependency (e.g. it was cancelled):
        counts neither way, but frees the probe slot so the next call can probe."""
        self._probing = False

    def snapshot(self) -> dict[str, Any]:
        """What `/readyz` shows: the state, the failure count and when the next probe is."""
        state = self.state
        body: dict[str, Any] = {"state": state, "consecutive_failures": self._failures}
        if state == "open":
            body["retry_in_s"] = round(self._retry_in(), 3)
        return body

    def _retry_in(self) -> float:
        return self._opened_at + self.cooldown_s - self.clock()
