"""A session's frames copied to the shared store, so that a reconnect on any replica can
read on; and, back from the store, whether a reader on another replica is reading.

The copy runs beside the session, never in its way: frames are sent to this replica's own
reader from memory, and a store that is slow or down costs that reader nothing. Frames
are written in batches (whatever accumulated since the last write, at most every
``FLUSH_S``), and the lease, expiries and trimming are renewed every third of the lease.
While the store is unreachable, frames wait in the session's own replay buffer; any that
were dropped from it meanwhile are missing from the store too, and a reader elsewhere that
reaches the gap is told the stream was interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from app.store.redis_log import SessionStore, StoreUnavailable

log = logging.getLogger("fit_check.session")

#: Writes are batched: at most one per this many seconds (a paced model's chunks are
#: 20-50 ms apart, so a write carries a few). A reader on another replica sees a frame at
#: most this much later than the producer's own reader: unnoticeable in a text read as it
#: comes, and a write costs more than a relayed chunk (docs/performance.md).
FLUSH_S = 0.1
#: A write carries at most this many bytes of frames (Redis holds a command's arguments
#: while it runs it: a flood's backlog is written in slices, not as one large command).
MAX_WRITE_BYTES = 64 * 1024


class MirroredSession(Protocol):
    """What the mirror reads from and reports to (``SessionRun``)."""

    @property
    def key(self) -> str: ...

    @property
    def session_id(self) -> str: ...

    @property
    def traceparent(self) -> str | None: ...

    @property
    def terminal_seq(self) -> int | None: ...

    @property
    def first_seq(self) -> int: ...

    @property
    def streaming(self) -> bool: ...

    def frames_from(self, seq: int) -> list[bytes] | None: ...

    def remote_reader(self, state: str | None) -> None: ...


class SessionMirror:
    """Copies one session's frames to the store until it is closed."""

    def __init__(self, store: SessionStore, session: MirroredSession, *, capped: bool) -> None:
        self._store = store
        self._session = session
        self._capped = capped
        #: Frames came since the loop last looked.
        self._frames_pending = False
        #: The loop's current wait, and whether a frame ends it (``close`` ends any).
        self._waiter: tuple[asyncio.Event, bool] | None = None
        self._next = 0  # the first frame not yet written
        self._opened = False
        self._terminal_written = False
        self._renewed_at = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mirror {self._session.key}")

    def wake(self) -> None:
        """A frame was added (cheap: called for every frame)."""
        self._frames_pending = True
        waiter = self._waiter
        if waiter is not None and waiter[1]:
            waiter[0].set()

    async def close(self, timeout_s: float) -> None:
        """Stop copying, then write what is left (the terminal frame above all), bounded by
        ``timeout_s``; a session that ended without a terminal frame gives up its lease and
        slot now."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        if self._waiter is not None:
            self._waiter[0].set()
        await asyncio.wait({task}, timeout=timeout_s)
        if not task.done():
            task.cancel()
            return
        with contextlib.suppress(StoreUnavailable), self._store.untraced():
            await self._flush()
            if not self._terminal_written:
                await self._store.abandon(self._session.key)

    async def _run(self) -> None:
        with self._store.untraced():
            await self._copy()

    async def _copy(self) -> None:
        renew_every = self._store.lease_s / 3
        while not self._stopping:
            self._frames_pending = False
            try:
                await self._flush()
                if time.monotonic() - self._renewed_at >= renew_every:
                    await self._renew()
            except StoreUnavailable:
                # Said in health and the log; frames wait in the replay buffer. Tried
                # again a renewal period later, not at the pace of the frames.
                await self._pause(renew_every, until_frames=False)
                continue
            # At most one write per FLUSH_S: the frames of a burst or of a paced stream
            # gather into one (``close`` ends the wait); then, if none came, wait for one.
            await self._pause(FLUSH_S, until_frames=False)
            if not self._frames_pending:
                idle = renew_every - (time.monotonic() - self._renewed_at)
                await self._pause(idle, until_frames=True)

    async def _pause(self, seconds: float, *, until_frames: bool) -> None:
        """Until ``seconds`` pass, ``close`` is called, or (``until_frames``) a frame comes.
        A timer ends the wait: no cancellation is involved, so ``close`` never races one."""
        if seconds <= 0 or self._stopping or (until_frames and self._frames_pending):
            return
        waiter = asyncio.Event()
        self._waiter = (waiter, until_frames)
        timer = asyncio.get_running_loop().call_later(seconds, waiter.set)
        try:
            await waiter.wait()
        finally:
            timer.cancel()
            self._waiter = None

    async def _flush(self) -> None:
        session = self._session
        if self._terminal_written:
            return
        frames = session.frames_from(self._next)
        if frames is None:
            first = session.first_seq
            log.warning(
                "Frames %s-%s were dropped before they reached the session store",
                self._next,
                first - 1,
            )
            self._next = first
            frames = session.frames_from(first) or []
        if not frames and self._opened:
            return
        for batch in _batches(frames):
            numbered = list(enumerate(batch, self._next))
            terminal = session.terminal_seq
            written_terminal = terminal is not None and terminal < self._next + len(batch)
            await self._store.write(
                session.key,
                numbered,
                terminal_seq=terminal if written_terminal else None,
                first_seq=session.first_seq,
                opening=None if self._opened else (session.session_id, session.traceparent),
            )
            self._opened = True
            self._next += len(batch)
            if written_terminal:
                self._terminal_written = True

    async def _renew(self) -> None:
        session = self._session
        if self._terminal_written:
            state = await self._store.reader_state(session.key)
        else:
            state = await self._store.renew(
                session.key,
                first_seq=session.first_seq,
                streaming=session.streaming,
                capped=self._capped,
            )
        self._renewed_at = time.monotonic()
        session.remote_reader(state)


def _batches(frames: list[bytes]) -> list[list[bytes]]:
    """``frames`` in consecutive slices of at most ``MAX_WRITE_BYTES`` (a larger frame
    alone); one empty slice when there are none (the opening write)."""
    batches: list[list[bytes]] = [[]]
    size = 0
    for frame in frames:
        if batches[-1] and size + len(frame) > MAX_WRITE_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(frame)
        size += len(frame)
    return batches
