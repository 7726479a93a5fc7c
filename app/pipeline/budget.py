"""The spend guard: an optional budget of US dollars per clock hour for LLM calls.

Every priced LLM call adds its cost to the current hour's spend; once the spend reaches the
budget, new streams are refused (``429 BUDGET_EXCEEDED`` with ``Retry-After`` set to the
end of the hour) while streams in flight finish: a stream already paid for in part is
worth finishing. With the shared store (``FIT_CHECK_REDIS_URL``) the hour's spend is one
Redis counter that every replica adds to, so the budget is global; without it, or while
Redis cannot be reached, each instance counts its own.

A clock hour rather than a sliding window: it is what an invoice and the dashboard's
"spend per hour" show, and it needs one number per hour, in memory or in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from app.store.redis_log import SessionStore, StoreUnavailable

HOUR_S = 3600


class BudgetExceeded(Exception):
    """429: this hour's LLM spend has reached the budget."""

    def __init__(self, spent_usd: float, budget_usd: float, retry_after_s: int) -> None:
        super().__init__(
            f"this hour's LLM spend (${spent_usd:.4f}) has reached the budget of "
            f"${budget_usd:.2f} an hour; new analyses start again in {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


class SpendBudget:
    def __init__(self, usd_per_hour: float | None, store: SessionStore | None = None) -> None:
        self._limit = usd_per_hour
        self._store = store
        self._hour = self._current_hour()
        self._local_usd = 0.0
        self._pending: set[asyncio.Task[None]] = set()

    @staticmethod
    def _current_hour() -> int:
        return int(time.time() // HOUR_S)

    def _roll(self) -> int:
        hour = self._current_hour()
        if hour != self._hour:
            self._hour, self._local_usd = hour, 0.0
        return hour

    def spent(self, cost_usd: float) -> None:
        """A call cost this much (called by the gateway; never blocks it)."""
        if self._limit is None or cost_usd <= 0:
            return
        hour = self._roll()
        self._local_usd += cost_usd
        if self._store is not None:
            task = asyncio.create_task(self._add_shared(hour, cost_usd))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _add_shared(self, hour: int, cost_usd: float) -> None:
        store = self._store
        if store is not None:
            with contextlib.suppress(StoreUnavailable):
                await store.add_spend(hour, cost_usd)

    async def check(self) -> None:
        """Raise BudgetExceeded when this hour's spend has reached the budget."""
        limit = self._limit
        if limit is None:
            return
        hour = self._roll()
        spent = self._local_usd
        if self._store is not None:
            with contextlib.suppress(StoreUnavailable):
                spent = max(spent, await self._store.spend(hour))
        if spent >= limit:
            retry_after = math.ceil((hour + 1) * HOUR_S - time.time())
            raise BudgetExceeded(spent, limit, max(retry_after, 1))
