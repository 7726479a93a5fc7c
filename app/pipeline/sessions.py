"""Admission control: how many sessions stream at once, and the count health reports."""

from __future__ import annotations


class SessionLimitReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} sessions are already streaming")
        self.limit = limit


class SessionSlots:
    """Counts admitted sessions; the service's own truth for ``active_sessions``.

    Single-threaded asyncio code calls it, so plain integers are safe. ``release`` is
    idempotent per slot so that every exit path may call it without double counting.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    def acquire(self) -> Slot:
        if self._active >= self._limit:
            raise SessionLimitReached(self._limit)
        self._active += 1
        return Slot(self)

    def _release(self) -> None:
        self._active -= 1


class Slot:
    __slots__ = ("_owner",)

    def __init__(self, owner: SessionSlots) -> None:
        self._owner: SessionSlots | None = owner

    def release(self) -> None:
        if self._owner is not None:
            self._owner._release()
            self._owner = None
