"""The limits of a streamed answer: first chunk, gap between chunks, whole answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.resilience.stream_timeouts import StreamLimits, StreamTimeout, stream_timeouts

LIMITS = StreamLimits(first_chunk_s=0.3, idle_s=0.2, overall_s=5)


async def chunks(gaps: list[float]) -> AsyncIterator[int]:
    """A chunk after each gap (seconds): a provider's pace."""
    for n, gap in enumerate(gaps):
        await asyncio.sleep(gap)  # the provider's pace, not synchronisation
        yield n


async def read(gaps: list[float], limits: StreamLimits = LIMITS) -> list[int]:
    got = []
    async with stream_timeouts(limits) as watch:
        async for chunk in chunks(gaps):
            watch.chunk()
            got.append(chunk)
    return got


async def test_a_slow_but_steady_answer_completes_past_any_single_gap() -> None:
    """Twenty chunks 0.1 s apart: 2 s in all, ten times the gap allowed between two."""
    assert await read([0.1] * 20) == list(range(20))


async def test_a_stall_mid_answer_ends_by_the_idle_limit() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StreamTimeout, match=r"^no chunk for 0.2s$"):
        await read([0.05, 0.05, 0.05, 30])
    assert loop.time() - started < 0.15 + 0.2 + 0.2  # within its bound, not the 30 s


async def test_a_first_chunk_gets_its_own_limit() -> None:
    assert await read([0.25, 0.1]) == [0, 1]  # longer than the gap, within the first's
    with pytest.raises(StreamTimeout, match=r"^no first chunk within 0.3s$"):
        await read([30])


async def test_the_whole_answer_is_bounded() -> None:
    with pytest.raises(StreamTimeout, match=r"^the answer took longer than 0.5s$"):
        await read([0.1] * 20, StreamLimits(first_chunk_s=0.3, idle_s=0.2, overall_s=0.5))


async def test_time_spent_waiting_for_the_reader_is_not_the_providers() -> None:
    async with stream_timeouts(LIMITS) as watch:
        watch.chunk()
        async with watch.paused():
            await asyncio.sleep(0.5)  # a reader taking its time: more than the idle limit
        watch.chunk()


async def test_a_gap_shorter_than_the_first_chunks_limit_is_watched_from_the_first_chunk() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StreamTimeout, match=r"^no chunk for 0.2s$"):
        await read([0.01, 30], StreamLimits(first_chunk_s=3, idle_s=0.2, overall_s=5))
    assert loop.time() - started < 1  # not at the first chunk's 3 s
