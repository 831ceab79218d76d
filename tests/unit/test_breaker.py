"""The circuit breaker (`gateway.breaker`), driven by an injected clock."""

from __future__ import annotations

import pytest

from gateway.breaker import BreakerOpen, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("opa", failure_threshold=3, cooldown_s=10.0, clock=clock)


def fail_times(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        breaker.admit()
        breaker.failed()


def test_stays_closed_below_the_threshold(breaker: CircuitBreaker) -> None:
    fail_times(breaker, 2)
    breaker.admit()
    assert breaker.state == "closed"
    assert breaker.snapshot() == {"state": "closed", "consecutive_failures": 2}


def test_a_success_resets_the_consecutive_count(breaker: CircuitBreaker) -> None:
    fail_times(breaker, 2)
    breaker.admit()
    breaker.succeeded()
    fail_times(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.snapshot()["consecutive_failures"] == 2


def test_opens_after_k_consecutive_failures_and_refuses_at_once(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail_times(breaker, 3)
    assert breaker.state == "open"
    clock.now += 4
    with pytest.raises(BreakerOpen) as caught:
        breaker.admit()
    assert caught.value.retry_in_s == pytest.approx(6.0)
    assert caught.value.failures == 3
    assert "open" in str(caught.value)
    assert breaker.snapshot() == {"state": "open", "consecutive_failures": 3, "retry_in_s": 6.0}


def test_after_the_cooldown_one_probe_goes_through_and_others_wait(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail_times(breaker, 3)
    clock.now += 10
    assert breaker.state == "half_open"
    breaker.admit()  # the probe
    with pytest.raises(BreakerOpen) as caught:
        breaker.admit()  # a second caller while the probe is in flight
    assert caught.value.retry_in_s == 0.0
    assert breaker.snapshot()["state"] == "half_open"


def test_a_successful_probe_closes_it(breaker: CircuitBreaker, clock: Clock) -> None:
    fail_times(breaker, 3)
    clock.now += 10
    breaker.admit()
    breaker.succeeded()
    assert breaker.snapshot() == {"state": "closed", "consecutive_failures": 0}
    for _ in range(5):
        breaker.admit()  # never raises


def test_a_failed_probe_reopens_it_for_another_cooldown(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail_times(breaker, 3)
    clock.now += 10
    breaker.admit()
    breaker.failed()
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen) as caught:
        breaker.admit()
    assert caught.value.retry_in_s == pytest.approx(10.0)
    clock.now += 10
    breaker.admit()  # the next probe
    assert breaker.state == "half_open"


def test_an_abandoned_probe_frees_the_slot(breaker: CircuitBreaker, clock: Clock) -> None:
    fail_times(breaker, 3)
    clock.now += 10
    breaker.admit()
    breaker.abandoned()  # e.g. the caller went away
    breaker.admit()  # a new probe may go
    with pytest.raises(BreakerOpen):
        breaker.admit()


def test_a_late_success_from_before_it_opened_closes_it(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        breaker.admit()  # four calls in flight at once
    for _ in range(3):
        breaker.failed()
    assert breaker.state == "open"
    breaker.succeeded()  # the fourth: OPA answered after all
    assert breaker.state == "closed"


def test_a_threshold_of_one_opens_on_the_first_failure(clock: Clock) -> None:
    breaker = CircuitBreaker("opa", failure_threshold=1, cooldown_s=1.0, clock=clock)
    fail_times(breaker, 1)
    with pytest.raises(BreakerOpen):
        breaker.admit()


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (3, 0.0), (3, -1.0)])
def test_nonsense_settings_are_refused(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("opa", failure_threshold=threshold, cooldown_s=cooldown)
