"""The circuit breaker's states, with a clock the test moves."""

from __future__ import annotations

from hearth.deployments.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("d", failures=3, window=10, cooldown=5, clock=clock)


def opened(clock: Clock) -> CircuitBreaker:
    """A breaker that has just opened: three failures at once."""
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    assert b.state is BreakerState.OPEN
    return b


def test_opens_after_n_failures_within_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.allows()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allows()
    assert b.retry_after() == 5


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    b = breaker(clock)
    b.record_failure()
    b.record_failure()
    clock.now += 11
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_a_success_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock)
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_half_open_lets_one_trial_through_and_closes_on_success() -> None:
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.state is BreakerState.HALF_OPEN
    assert b.allows()  # the trial
    assert not b.allows()  # only one at a time
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.allows()


def test_a_failed_trial_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.allows()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 4.9
    assert not b.allows()
    clock.now += 0.1
    assert b.allows()


def test_a_trial_whose_outcome_never_comes_does_not_block_forever() -> None:
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.allows()
    clock.now += 5
    assert b.allows()


def test_a_probe_closes_only_after_the_cooldown() -> None:
    clock = Clock()
    b = opened(clock)
    b.probe_succeeded()
    assert b.state is BreakerState.OPEN
    clock.now += 5
    b.probe_succeeded()
    assert b.state is BreakerState.CLOSED
