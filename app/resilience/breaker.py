"""A circuit breaker per dependency, so a failing provider fails fast instead of piling up.

One small class rather than a library: the maintained Python breakers are either
synchronous (pybreaker, whose async path needs Tornado) or unmaintained (aiobreaker),
and the service needs an injectable clock for tests and a single half-open trial.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: The numeric encoding of ``fit_check_circuit_breaker_state`` (the spec's contract).
STATE_VALUES: dict[BreakerState, int] = {
    BreakerState.CLOSED: 0,
    BreakerState.OPEN: 1,
    BreakerState.HALF_OPEN: 2,
}


class CircuitOpenError(Exception):
    """Raised instead of calling a dependency whose breaker is open."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"{name} circuit breaker is open; retry in {retry_after_s:.0f}s")
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """Counts consecutive failures; opens at the threshold; lets one trial through later.

    ``closed`` passes calls and counts consecutive failures. At ``failure_threshold``
    it opens: calls fail fast with :class:`CircuitOpenError`. After ``reset_timeout_s``
    the next call becomes the single half-open trial (others still fail fast); its
    success closes the breaker, its failure opens it again for another timeout.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        is_failure: Callable[[BaseException], bool] = lambda exc: isinstance(exc, Exception),
    ) -> None:
        self.name = name
        self._threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._is_failure = is_failure
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state as a caller arriving now would see it (an expired open reads half-open)."""
        if self._state is BreakerState.OPEN and self._reset_due():
            return BreakerState.HALF_OPEN
        return self._state

    def _reset_due(self) -> bool:
        return self._clock() - self._opened_at >= self._reset_timeout_s

    def _admit(self) -> bool:
        """Decide whether a call may go through; True means it is the half-open trial."""
        if self._state is BreakerState.OPEN:
            if not self._reset_due():
                raise CircuitOpenError(self.name, self._retry_after())
            self._state = BreakerState.HALF_OPEN
        if self._state is BreakerState.HALF_OPEN:
            if self._trial_in_flight:
                raise CircuitOpenError(self.name, self._reset_timeout_s)
            self._trial_in_flight = True
            return True
        return False

    def _retry_after(self) -> float:
        return max(0.0, self._reset_timeout_s - (self._clock() - self._opened_at))

    def _on_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0

    def _on_failure(self, trial: bool) -> None:
        self._failures += 1
        if trial or self._failures >= self._threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the body as one call to the dependency, or raise CircuitOpenError at once.

        A cancelled call (client gone) is neither a success nor a failure of the dependency.
        """
        trial = self._admit()
        try:
            yield
        except BaseException as exc:
            if self._is_failure(exc):
                self._on_failure(trial)
            raise
        else:
            self._on_success()
        finally:
            if trial:
                self._trial_in_flight = False
