"""The replay buffer past its cap: what it keeps, what it drops, what it can still replay;
and a stream longer than ``FIT_CHECK_REPLAY_BUFFER_BYTES`` over a real socket, read live
and resumed after frames were dropped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from app.pipeline.event_ids import parse_last_event_id
from app.pipeline.replay import ReplayBuffer
from app.providers.base import LLMRequest, LLMUsage
from app.providers.factory import Providers
from app.providers.offline import OfflineAnalyzer
from tests.fakes import CountingSearch
from tests.helpers import HarnessFactory, LiveServerFactory, wait_until


def filled(max_bytes: int, *frames: bytes, sent: int = 0) -> ReplayBuffer:
    buffer = ReplayBuffer(max_bytes)
    for frame in frames:
        buffer.append(frame)
    buffer.sent_through(sent)
    return buffer


def test_exactly_max_bytes_drops_nothing_and_one_byte_more_drops_the_oldest() -> None:
    buffer = filled(10, b"aaaa", b"bbbbbb", sent=2)
    assert (buffer.first_seq, buffer.size, buffer.since(0)) == (0, 10, [b"aaaa", b"bbbbbb"])
    buffer.append(b"c")
    assert (buffer.first_seq, buffer.size, buffer.unsent_bytes) == (1, 7, 1)
    assert buffer.since(0) is None
    assert buffer.since(1) == [b"bbbbbb", b"c"]


def test_a_frame_bigger_than_the_cap_is_kept_until_it_is_sent() -> None:
    buffer = filled(10, b"aaaa", sent=1)
    big = b"t" * 25  # a terminal event larger than the whole allowance
    buffer.append(big)
    assert (buffer.first_seq, buffer.next_seq, buffer.size, buffer.unsent_bytes) == (1, 2, 25, 25)
    assert buffer.since(1) == [big]
    buffer.sent_through(2)
    assert (buffer.first_seq, buffer.next_seq, buffer.size, buffer.unsent_bytes) == (2, 2, 0, 0)
    assert buffer.since(2) == [] and buffer.since(1) is None


def test_frames_not_sent_are_never_dropped_however_many() -> None:
    buffer = filled(10, *[b"x" * 5] * 8, sent=3)
    assert (buffer.first_seq, buffer.size, buffer.unsent_bytes) == (3, 25, 25)
    assert buffer.since(3) == [b"x" * 5] * 5
    buffer.sent_through(1)  # asked for again: below what is held, kept from the oldest
    assert (buffer.first_seq, buffer.unsent_bytes) == (3, 25)


def test_what_is_unsent_follows_the_reader_forward_and_back() -> None:
    """A reader sent one frame or several, and a reconnect asking for older frames (one
    back or several): what is unsent is always the bytes from ``keep_from`` on."""
    frames = [b"a", b"bb", b"ccc", b"dddd", b"eeeee"]
    buffer = filled(100, *frames)
    for seq in (1, 3, 2, 5, 1, 4, 0, 5):
        buffer.sent_through(seq)
        assert buffer.unsent_bytes == sum(map(len, frames[seq:])), seq
    assert (buffer.first_seq, buffer.size, buffer.since(0)) == (0, 15, frames)


def test_holds_at_both_edges_after_drops() -> None:
    buffer = filled(10, *[bytes([n]) * 4 for n in range(6)], sent=6)
    assert (buffer.first_seq, buffer.next_seq) == (4, 6)
    assert [seq for seq in range(-1, 9) if buffer.holds(seq)] == [4, 5, 6]


def test_since_after_drops_starts_at_the_frame_asked_for() -> None:
    frames = [bytes([n]) * 3 for n in range(200)]
    buffer = ReplayBuffer(30)
    for n, frame in enumerate(frames):
        buffer.append(frame)
        buffer.sent_through(n + 1)
        first = buffer.first_seq
        assert first == max(0, n - 9)
        assert buffer.since(first) == frames[first : n + 1]
        assert buffer.since(n) == [frame] and buffer.since(n + 1) == []
        assert buffer.since(first - 1) is None


def test_a_dropped_frame_is_let_go_at_once() -> None:
    """Its slot stays until the list is compacted; its bytes do not."""
    buffer = filled(10, *[b"x" * 8] * 5, sent=5)
    assert buffer.first_seq == 4 and len(buffer._frames) == 5
    assert buffer._frames == [b""] * 4 + [b"x" * 8]


def test_compaction_waits_for_enough_dropped_frames() -> None:
    """Frames dropped from the front are removed from the list in one move once there are
    64 of them and they are half of it; before that they are only emptied."""
    buffer = filled(0, *[b"x"] * 63, sent=63)
    assert len(buffer._frames) == 63 and buffer.since(63) == []
    buffer.append(b"y")
    buffer.sent_through(64)
    assert buffer._frames == [] and buffer.since(64) == []
    half = filled(0, *[b"x"] * 128, sent=64)
    assert len(half._frames) == 64 and half.since(64) == [b"x"] * 64
    under_half = filled(0, *[b"x"] * 129, sent=64)
    assert len(under_half._frames) == 129 and under_half.since(64) == [b"x"] * 65


class ChunkedReport:
    """The offline analyzer, but the report comes in ``chunks`` chunks of ``size``
    characters, each only once the test has released it."""

    name = "offline"
    model = "offline-analyzer"

    def __init__(self, chunks: int, size: int, *, released: int) -> None:
        self.inner = OfflineAnalyzer()
        self.chunks = chunks
        self.size = size
        self.released = released
        self.yielded = 0
        self._more = asyncio.Event()

    def release(self, chunks: int) -> None:
        self.released = chunks
        self._more.set()

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncGenerator[str, None]:
        if request.task != "generate_results":
            async for chunk in self.inner.stream(request, usage):
                yield chunk
            return
        for n in range(self.chunks):
            while n >= self.released:
                self._more.clear()
                await self._more.wait()
            self.yielded = n + 1
            yield f"{n:04d}" + "r" * (self.size - 4)
        usage.finish_reason = "stop"

    async def aclose(self) -> None:
        return None


STREAM = "/api/fit-check/stream"
QUERY = {"query": "Senior Python engineer, Kafka", "session_id": "replay-cap"}
REPLAY_BYTES = 4096


def seqs(events: list[ServerSentEvent]) -> list[int]:
    parsed = [parse_last_event_id(e.id) for e in events]
    assert None not in parsed, [e.id for e in events]
    return [p.seq for p in parsed if p is not None]


def report_of(events: list[ServerSentEvent]) -> str:
    return "".join(json.loads(e.data)["chunk"] for e in events if e.event == "response")


async def test_a_stream_longer_than_the_replay_buffer_is_read_live_to_its_end(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    llm = ChunkedReport(60, 200, released=60)  # 12 KB of report alone
    providers = Providers(search=CountingSearch(), llm=llm)
    h = harness_factory(providers=providers, replay_buffer_bytes=REPLAY_BYTES)
    async with live_server(h.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        async with aconnect_sse(client, "GET", STREAM, params=QUERY) as source:
            events = [sse async for sse in source.aiter_sse() if sse.id]
        await wait_until(lambda: h.service.sessions.active == 0)
    assert seqs(events) == list(range(len(events)))
    assert events[-1].event == "complete"
    assert sum(len(e.data) for e in events) > 3 * REPLAY_BYTES
    assert report_of(events).count("r" * 196) == 60
    assert h.telemetry.value("fit_check.requests", status="success") == 1


async def test_a_stream_resumed_after_its_oldest_frames_were_dropped_misses_nothing(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    llm = ChunkedReport(60, 200, released=30)
    providers = Providers(search=CountingSearch(), llm=llm)
    h = harness_factory(providers=providers, replay_buffer_bytes=REPLAY_BYTES, resume_window_s=10)
    async with live_server(h.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        first: list[ServerSentEvent] = []
        async with aconnect_sse(client, "GET", STREAM, params=QUERY) as source:
            async for sse in source.aiter_sse():
                if sse.id:
                    first.append(sse)
                if len(report_of(first)) == 30 * 200:
                    break  # all that was released is read: hang up
        last = parse_last_event_id(first[-1].id)
        assert last is not None
        session = h.service.sessions.get(last.key)
        assert session is not None
        # Past the cap: the oldest frames are gone, the one after the last read is not.
        await wait_until(lambda: session.lingering_since is not None)
        assert session.first_seq > 0 and session.can_resume_after(last.seq)
        assert not session.can_resume_after(0)
        llm.release(60)
        rest: list[ServerSentEvent] = []
        headers = {"Last-Event-ID": first[-1].id}
        async with aconnect_sse(client, "GET", STREAM, params=QUERY, headers=headers) as source:
            assert source.response.status_code == 200
            rest = [sse async for sse in source.aiter_sse() if sse.id]
        await wait_until(lambda: h.service.sessions.active == 0)
    events = first + rest
    assert seqs(events) == list(range(len(events)))  # no gap, no duplicate
    assert [e.event for e in events].count("complete") == 1 and events[-1].event == "complete"
    assert [chunk[:4] for chunk in report_of(events).split("r" * 196) if chunk] == [
        f"{n:04d}" for n in range(60)
    ]
    assert h.telemetry.value("fit_check.requests", status="success") == 1
