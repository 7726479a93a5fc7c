"""Reading on, from the shared store, a session that another replica runs.

A reconnect that lands on a replica other than the producer's reads the session's frames
from the store after its ``Last-Event-ID``, then follows new ones until the terminal
frame. It never starts an analysis. It reports how far it has read, so the producer
knows somebody is reading (its lingering and backpressure rules treat this reader like
its own), and when it has been sent the terminal frame.

A producer that dies stops renewing its lease: once the lease is gone with no terminal
frame written, the reader ends the stream with an ``INTERRUPTED`` error event. The same
happens when the store cannot be read for longer than a lease, and when frames were lost
on the way to the store (a gap): in every case the client gets a terminal event, and the
paid analysis is never silently run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator

from app.pipeline.event_ids import event_id
from app.pipeline.events import ErrorEvent, Event, bounded_frame
from app.store.redis_log import DELIVERED, SessionStore, StoreUnavailable
from otel.facade import Telemetry

log = logging.getLogger("fit_check.session")

#: How often the reader tells the producer how far it has read, at most.
REPORT_EVERY_S = 0.5
#: How long a reader tolerates a store that cannot be read before it gives up, beyond the
#: lease: the producer's own reader is unaffected, only this one cannot follow.
STORE_GRACE_S = 2.0
#: Pause before reading again after the store failed to answer.
RETRY_S = 0.1


def interrupted_frame(key: str, seq: int, message: str) -> bytes:
    event = Event("error", ErrorEvent(code="INTERRUPTED", message=message))
    return bounded_frame(event, event_id(key, seq, terminal=True))


async def remote_frames(
    store: SessionStore,
    key: str,
    *,
    after: int,
    retry_frame: bytes,
    telemetry: Telemetry,
) -> AsyncGenerator[bytes, None]:
    """The frames after event ``after`` of a session run elsewhere, up to its terminal one
    (or an ``INTERRUPTED`` error event when it cannot have one)."""
    position = after + 1
    prefix = retry_frame
    reported_at = 0.0
    unreadable_since: float | None = None
    give_up_s = store.lease_s + STORE_GRACE_S

    def interrupted(message: str) -> bytes:
        telemetry.stream_interrupted()
        log.warning("Stream interrupted: %s", message)
        return prefix + interrupted_frame(key, position, message)

    while True:
        try:
            frames = await store.read(key, position - 1, block=True)
            if not frames and not await store.producer_alive(key):
                # The terminal frame may have been written just before the lease went.
                frames = await store.read(key, position - 1, block=False)
                if not frames:
                    yield interrupted("the replica running the analysis stopped; send it again")
                    return
            unreadable_since = None
        except StoreUnavailable:
            now = time.monotonic()
            unreadable_since = unreadable_since or now
            if now - unreadable_since > give_up_s:
                yield interrupted("the shared session store is unreachable; send it again")
                return
            await asyncio.sleep(RETRY_S)  # a refused connection fails at once: not a spin
            continue
        if frames:
            if frames[0].seq != position:
                yield interrupted("part of the stream was lost on its way to the session store")
                return
            yield prefix + b"".join(frame.data for frame in frames)
            prefix = b""
            position = frames[-1].seq + 1
            if frames[-1].terminal:
                await _report(store, key, DELIVERED)
                return
        now = time.monotonic()
        if now - reported_at >= REPORT_EVERY_S:
            reported_at = now
            await _report(store, key, str(position))


async def _report(store: SessionStore, key: str, state: str) -> None:
    # Unreported, the producer sees no reader: its resume window is then the bound.
    with contextlib.suppress(StoreUnavailable):
        await store.reader_at(key, state)
