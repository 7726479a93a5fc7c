"""Admission control and lookup of this instance's live sessions.

A session is live from admission until it is settled: its client got the terminal event,
or its resume window passed with nobody reading. That count is ``active_sessions`` in
health and ``fit_check_active_sessions`` in the metrics: a session waiting for its client
to come back still holds its slot, its pipeline and its replay buffer.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar


class SessionLimitReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} sessions are already streaming")


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


S = TypeVar("S", bound=Keyed)


class LiveSessions(Generic[S]):
    """Sessions by stream key. Single-threaded asyncio code calls it, so no locks."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._live: dict[str, S] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def active(self) -> int:
        return len(self._live)

    def add(self, session: S) -> None:
        if len(self._live) >= self._limit:
            raise SessionLimitReached(self._limit)
        self._live[session.key] = session
        self._empty.clear()

    def get(self, key: str) -> S | None:
        return self._live.get(key)

    def discard(self, session: S) -> None:
        """Idempotent, so every exit path may call it without double counting."""
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
