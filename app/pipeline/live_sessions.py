"""Admission control and lookup of this instance's live sessions.

A session is live from admission until it is settled: its client got the terminal event,
or its resume window passed with nobody reading. That count is ``active_sessions`` in
health and ``fit_check_active_sessions`` in the metrics.

Two kinds of live session are told apart, because only one of them is somebody's
analysis being watched:

* **streaming**: somebody reads it (or is about to: it was just admitted). At most
  ``limit`` of them; past it a new stream gets 429.
* **lingering**: its client left after some events and may still come back with
  ``Last-Event-ID``. They do not count against ``limit``, so requests that are opened and
  dropped cannot keep honest clients out; they have their own, smaller allowance
  (``max_lingering``), and past it the one waiting longest is dropped. A lingering
  session spends nothing more (its pipeline waits for a reader before each phase).

Each client address may hold ``per_client`` live sessions of either kind.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

#: How long a session is expected to take before any has been timed here.
DEFAULT_EXPECTED_S = 5.0
#: Weight of the latest session in the running estimate of a session's duration.
_EWMA_WEIGHT = 0.2


class SessionLimitReached(Exception):
    """429: the instance, or this client, has as many sessions as it may."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Live(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def client(self) -> str: ...

    @property
    def opened_at(self) -> float: ...

    @property
    def lingering_since(self) -> float | None: ...

    def abandon(self) -> None: ...


S = TypeVar("S", bound=Live)


class LiveSessions(Generic[S]):
    """Sessions by stream key. Single-threaded asyncio code calls it, so no locks."""

    def __init__(
        self,
        limit: int,
        *,
        max_lingering: int | None = None,
        per_client: int | None = None,
        max_retry_after_s: int = 60,
    ) -> None:
        self._limit = limit
        self._max_lingering = limit if max_lingering is None else max_lingering
        self._per_client = per_client
        self._max_retry_after_s = max_retry_after_s
        self._live: dict[str, S] = {}
        self._expected_s = DEFAULT_EXPECTED_S
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def active(self) -> int:
        return len(self._live)

    def add(self, session: S) -> None:
        """Admit ``session``, or raise SessionLimitReached with the reason and when to
        come back. Lingering sessions past their allowance are dropped first."""
        lingering = self._settle_lingering()
        streaming = len(self._live) - lingering
        if streaming >= self._limit:
            raise SessionLimitReached(
                f"{streaming} sessions are streaming (the limit is {self._limit}) and "
                f"{lingering} wait for their clients to come back",
                self._retry_after(self._live.values()),
            )
        if self._per_client is not None:
            mine = [s for s in self._live.values() if s.client == session.client]
            if len(mine) >= self._per_client:
                raise SessionLimitReached(
                    f"this client already has {len(mine)} sessions open (the limit per "
                    f"client is {self._per_client})",
                    self._retry_after(mine),
                )
        self._live[session.key] = session
        self._empty.clear()

    def _settle_lingering(self) -> int:
        """Drop the lingering sessions that wait longest past the allowance; how many
        lingering sessions are left."""
        waiting = sorted(
            (since, session.key)
            for session in self._live.values()
            if (since := session.lingering_since) is not None
        )
        excess = len(waiting) - self._max_lingering
        for _, key in waiting[: max(excess, 0)]:
            self._live[key].abandon()  # it leaves the live set once its task has stopped
        return len(waiting)

    def retry_after(self) -> int:
        """When one of this instance's streaming sessions is expected to end."""
        return self._retry_after(self._live.values())

    def _retry_after(self, sessions: Iterable[S]) -> int:
        """Seconds until one of ``sessions`` is expected to end, by the running estimate
        of how long a session takes; at least 1, at most ``max_retry_after_s``."""
        now = time.monotonic()
        ages = [now - s.opened_at for s in sessions if s.lingering_since is None]
        soonest = self._expected_s - max(ages, default=0.0)
        return min(max(1, math.ceil(soonest)), self._max_retry_after_s)

    def get(self, key: str) -> S | None:
        return self._live.get(key)

    def discard(self, session: S) -> None:
        """Idempotent, so every exit path may call it without double counting."""
        if self._live.get(session.key) is session:
            del self._live[session.key]
            duration = time.monotonic() - session.opened_at
            self._expected_s += _EWMA_WEIGHT * (duration - self._expected_s)
            if not self._live:
                self._empty.set()

    def withdraw(self, session: S) -> None:
        """Undo ``add`` for a session refused after all (the cap across replicas): it ran
        no time, so the running estimate of a session's duration does not learn from it."""
        if self._live.get(session.key) is session:
            del self._live[session.key]
            if not self._live:
                self._empty.set()

    def all(self) -> list[S]:
        return list(self._live.values())

    async def wait_empty(self, timeout_s: float) -> bool:
        """True once no session is live; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        except TimeoutError:
            return False
        return True
