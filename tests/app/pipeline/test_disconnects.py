"""Clients that hang up at every point of the stream: nothing keeps running, nothing leaks."""

from __future__ import annotations

import asyncio
import gc
import json
import resource

import pytest

from tests.fakes import CountingLLM, counting_providers
from tests.helpers import Harness, HarnessFactory, LiveServerFactory, session_tasks, wait_until

BODY = json.dumps({"query": "Senior Python engineer, Kafka"}).encode()


async def open_stream(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /api/fit-check/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )
    await writer.drain()
    return reader, writer


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> None:
    seen = b""
    while marker not in seen:
        chunk = await asyncio.wait_for(reader.read(4096), 10)
        assert chunk, "server closed the stream first"
        seen = seen[-len(marker) :] + chunk


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def assert_clean(h: Harness, llm: CountingLLM) -> None:
    assert h.service.sessions.active == 0
    assert h.telemetry.value("fit_check_active_sessions") == 0
    assert h.telemetry.open_spans.open == 0
    assert llm.active == 0
    assert not session_tasks()


@pytest.mark.parametrize(
    "cut_at", [None, b"event: session", b"skeptical_comparison", b"event: response"]
)
async def test_hang_up_anywhere_counts_one_cancelled_request(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, cut_at: bytes | None
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=0.2, llm_chunk_delay_s=0.02)
    h = harness_factory(providers=providers, resume_window_s=0)  # nobody will come back
    async with live_server(h.app) as server:
        reader, writer = await open_stream(server.url)
        if cut_at is None:  # before the first event: wait for admission, then go
            await wait_until(lambda: h.service.sessions.active == 1)
        else:
            await read_until(reader, cut_at)
        await hang_up(writer)
        await wait_until(lambda: h.telemetry.value("fit_check.requests", status="cancelled") == 1)
        await wait_until(lambda: h.service.sessions.active == 0)
        calls = llm.calls
        await wait_until(lambda: not session_tasks())  # nothing left that could call the LLM
        assert llm.calls == calls
        assert_clean(h, llm)
    total = sum(
        h.telemetry.value("fit_check.requests", status=s)
        for s in ("success", "error", "timeout", "cancelled")
    )
    assert total == 1


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_a_storm_of_500_disconnects_leaves_nothing_behind(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """Clients that vanish mid-stream and never come back: each session waits out its
    resume window, then nothing of it is left (no session, task, span or buffer)."""
    providers, _, llm = counting_providers(llm_delay_s=0.05)
    h = harness_factory(
        providers=providers,
        max_concurrent_sessions=1000,
        max_lingering_sessions=1000,  # every one of them waits out its window
        max_sessions_per_client=1000,
        resume_window_s=0.5,
    )

    async def one() -> None:
        reader, writer = await open_stream(server.url)
        await read_until(reader, b"event: phase")
        await hang_up(writer)

    async def storm() -> None:
        for batch in range(10):
            await asyncio.gather(*(one() for _ in range(45 if batch else 50)))
        assert h.service.sessions.active > 0  # waiting for clients that will not come back
        await wait_until(lambda: h.service.sessions.active == 0, timeout_s=20)
        h.telemetry.spans.clear()  # the test's in-memory exporter keeps every span it got
        gc.collect()

    async with live_server(h.app) as server:
        # The first storm sets the peak: up to all 455 sessions wait at once. A second one
        # of the same size finds that memory free again, unless sessions left some behind.
        await storm()
        before = rss_mb()
        await storm()
        growth = rss_mb() - before
        assert_clean(h, llm)
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 2 * (50 + 9 * 45)
    assert growth < 5, f"peak RSS grew {growth:.1f} MB over a second storm of 455 disconnects"
