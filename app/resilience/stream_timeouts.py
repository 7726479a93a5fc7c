"""Timeouts that fit a streamed answer: one for its first chunk, one for the gap between
chunks, and an overall bound.

One limit around a whole streamed answer cuts a healthy answer that is still arriving: a
local model at 40 tokens/s needs 30 s for 1,200 tokens. What a stalled provider looks like
is different: nothing for a while. So the first chunk (which waits for the prompt to be
read) and every later one each get a limit of their own, and the overall bound is set
where only a broken provider reaches it.

The watch costs nothing per chunk but a clock read: a single timer checks, when it fires,
whether a chunk came meanwhile, and only then re-arms (once per idle period, not per chunk).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass


class StreamTimeout(TimeoutError):
    """A streamed call hit one of its limits; the message names which."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    first_chunk_s: float
    idle_s: float
    overall_s: float


class StreamWatch:
    """Marks each chunk's arrival; ``pause`` while the caller, not the provider, is slow."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: StreamLimits) -> None:
        self._loop = loop
        self._limits = limits
        self._last = loop.time()
        self._got_one = False
        self._paused = False
        self.fired: str | None = None
        #: Set by ``stream_timeouts``: moves its timer to the gap's deadline.
        self.on_first_chunk: Callable[[], None] = lambda: None

    def chunk(self) -> None:
        self._last = self._loop.time()
        if not self._got_one:
            self._got_one = True
            self.on_first_chunk()  # the gap's limit may end before the first chunk's did

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Time spent in here (waiting for the reader) is not the provider's."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False
            self._last = self._loop.time()

    def _limit(self) -> float:
        return self._limits.idle_s if self._got_one else self._limits.first_chunk_s

    def deadline(self) -> float:
        return self._last + self._limit()

    def next_check(self) -> float:
        """When to look again: at the deadline, or, while paused, a limit from now."""
        if self._paused:
            return self._loop.time() + self._limit()
        return self.deadline()

    def expired(self) -> bool:
        """Whether the current limit has run out; records which one did."""
        if self._paused or self._loop.time() < self.deadline():
            return False
        limit = self._limit()
        self.fired = (
            f"no chunk for {limit:g}s" if self._got_one else f"no first chunk within {limit:g}s"
        )
        return True


@asynccontextmanager
async def stream_timeouts(limits: StreamLimits) -> AsyncIterator[StreamWatch]:
    """The block reads a stream; call ``watch.chunk()`` for each chunk. Raises
    StreamTimeout naming the limit that fired."""
    loop = asyncio.get_running_loop()
    watch = StreamWatch(loop, limits)
    overall = asyncio.timeout(limits.overall_s)
    try:
        async with overall, asyncio.timeout(None) as idle:

            def check() -> None:
                if watch.expired():
                    idle.reschedule(loop.time())  # the block is cancelled now
                else:
                    arm()

            def arm() -> None:
                handle[0].cancel()
                handle[0] = loop.call_at(watch.next_check(), check)

            handle = [loop.call_at(watch.next_check(), check)]
            watch.on_first_chunk = arm
            try:
                yield watch
            finally:
                handle[0].cancel()
    except TimeoutError as exc:
        if watch.fired is not None:
            raise StreamTimeout(watch.fired) from exc
        if overall.expired():
            raise StreamTimeout(f"the answer took longer than {limits.overall_s:g}s") from exc
        raise
