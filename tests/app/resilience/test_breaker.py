"""The circuit breaker's states, with a clock the test controls."""

from __future__ import annotations

import asyncio

import pytest

from app.resilience.breaker import BreakerState, CircuitBreaker, CircuitOpenError


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read afresh: mypy would otherwise keep ``breaker.state`` narrowed across awaits."""
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(RuntimeError):
        async with breaker.guard():
            raise RuntimeError("boom")


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker.guard():
        pass


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("llm", failure_threshold=3, reset_timeout_s=10, clock=clock)


async def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    await fail(breaker)
    await fail(breaker)
    assert state(breaker) is BreakerState.CLOSED
    await fail(breaker)
    assert state(breaker) is BreakerState.OPEN


async def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    await fail(breaker)
    await fail(breaker)
    await succeed(breaker)
    await fail(breaker)
    await fail(breaker)
    assert state(breaker) is BreakerState.CLOSED


async def test_open_breaker_fails_fast_without_running_the_call(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        await fail(breaker)
    ran = False
    with pytest.raises(CircuitOpenError) as info:
        async with breaker.guard():
            ran = True
    assert not ran
    assert info.value.retry_after_s == pytest.approx(10)


async def test_retry_after_counts_down_to_the_trial(breaker: CircuitBreaker, clock: Clock) -> None:
    clock.now = 100.0  # opened at a time that is not zero
    for _ in range(3):
        await fail(breaker)
    waits = []
    for now in (100.0, 104.0, 109.5):
        clock.now = now
        with pytest.raises(CircuitOpenError) as info:
            async with breaker.guard():
                pass
        waits.append(info.value.retry_after_s)
    assert waits == pytest.approx([10.0, 6.0, 0.5])


async def test_half_open_lets_one_trial_through_and_success_closes(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    for _ in range(3):
        await fail(breaker)
    clock.now = 10
    assert state(breaker) is BreakerState.HALF_OPEN
    trial_entered = asyncio.Event()
    release = asyncio.Event()

    async def trial() -> None:
        async with breaker.guard():
            trial_entered.set()
            await release.wait()

    task = asyncio.create_task(trial())
    await trial_entered.wait()
    with pytest.raises(CircuitOpenError):  # a second caller while the trial is in flight
        async with breaker.guard():
            pass
    release.set()
    await task
    assert state(breaker) is BreakerState.CLOSED


async def test_failed_trial_opens_again_for_a_full_timeout(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    for _ in range(3):
        await fail(breaker)
    clock.now = 10
    await fail(breaker)
    assert state(breaker) is BreakerState.OPEN
    clock.now = 19
    assert state(breaker) is BreakerState.OPEN
    clock.now = 20
    assert state(breaker) is BreakerState.HALF_OPEN


async def test_cancellation_is_not_a_failure(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        with pytest.raises(asyncio.CancelledError):
            async with breaker.guard():
                raise asyncio.CancelledError
    assert state(breaker) is BreakerState.CLOSED
