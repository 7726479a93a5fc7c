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
#: 20-50 ms apart, so a write carries a few).
FLUSH_S = 0.025


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
        self._wake = asyncio.Event()
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
        self._wake.set()

    async def close(self, timeout_s: float) -> None:
        """Stop copying, then write what is left (the terminal frame above all), bounded by
        ``timeout_s``; a session that ended without a terminal frame gives up its lease and
        slot now."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wake.set()
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
            self._wake.clear()
            try:
                await self._flush()
                if time.monotonic() - self._renewed_at >= renew_every:
                    await self._renew()
            except StoreUnavailable:
                # Said in health and the log; frames wait in the replay buffer. Tried
                # again a renewal period later, not at the pace of the frames (``close``
                # waits for this sleep at most).
                await asyncio.sleep(renew_every)
                continue
            await self._pause(renew_every - (time.monotonic() - self._renewed_at))
            if not self._stopping:
                await asyncio.sleep(FLUSH_S)  # a burst of frames gathers into one write

    async def _pause(self, seconds: float) -> None:
        """Until ``seconds`` pass, a frame comes, or ``close``. A timer sets the event: no
        cancellation is involved, so ``close`` never races one."""
        if seconds <= 0:
            return
        timer = asyncio.get_running_loop().call_later(seconds, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

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
        numbered = list(enumerate(frames, self._next))
        terminal = session.terminal_seq
        written_terminal = terminal is not None and terminal < self._next + len(frames)
        await self._store.write(
            session.key,
            numbered,
            terminal_seq=terminal if written_terminal else None,
            opening=None if self._opened else (session.session_id, session.traceparent),
        )
        self._opened = True
        self._next += len(frames)
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
