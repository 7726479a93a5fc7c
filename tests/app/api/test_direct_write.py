"""A session's frames written straight to its reader's connection, and sends with no
cancel scope unless they wait: every frame still arrives once and in order, and a reader
that stops taking them is still cut after the send timeout."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message

from app.api.direct_send import (
    SERVER_SEND,
    DirectEventSourceResponse,
    finish_send,
    start_send,
)
from app.pipeline.event_ids import parse_last_event_id
from app.pipeline.events import Event, PhaseEvent, ResponseEvent
from app.pipeline.phases import EventSink
from app.pipeline.session import Pipeline, SessionRun, WriteOutcome
from otel.testing import captured_telemetry
from tests.fake_apis import FakeAPI, provider_settings
from tests.helpers import HarnessFactory, LiveServerFactory, parse_sse

# --- starting a send eagerly -----------------------------------------------------------


async def test_a_send_that_need_not_wait_completes_at_once() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    assert start_send(send, {"type": "x"}) is None
    assert sent == [{"type": "x"}]


async def test_a_send_that_waits_is_finished_later_as_a_task_would() -> None:
    ready = asyncio.Event()
    steps: list[str] = []

    async def send(_message: Message) -> None:
        steps.append("start")
        await asyncio.sleep(0)  # a bare yield
        await ready.wait()  # a future (the C implementation's, with its flag)
        steps.append("end")

    started = start_send(send, {"type": "x"})
    assert started is not None and steps == ["start"]
    finishing = asyncio.create_task(finish_send(started))
    await asyncio.sleep(0.05)
    assert not finishing.done()
    ready.set()
    await asyncio.wait_for(finishing, 1)
    assert steps == ["start", "end"]


async def test_a_waiting_send_that_is_cancelled_sees_the_cancellation() -> None:
    cleaned_up = asyncio.Event()

    async def send(_message: Message) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    started = start_send(send, {"type": "x"})
    assert started is not None
    finishing = asyncio.create_task(finish_send(started))
    await asyncio.sleep(0.01)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert cleaned_up.is_set()


async def test_a_send_that_fails_at_once_raises_at_once() -> None:
    async def send(_message: Message) -> None:
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        start_send(send, {"type": "x"})


# --- the session writing to its reader -------------------------------------------------


class Paced:
    """Emits ``count`` report chunks, one per ``step`` (or all, ``gap_s`` apart)."""

    def __init__(self, count: int, gap_s: float = 0.0) -> None:
        self.count = count
        self.gap_s = gap_s

    async def run(self, query: str, emit: EventSink, *, include_thoughts: bool = True) -> None:
        emit(Event("phase", PhaseEvent(phase="generate_results", message=query)))
        for n in range(self.count):
            await asyncio.sleep(self.gap_s)
            emit(Event("response", ResponseEvent(chunk=f"w{n} ")))
            if emit.congested:
                await emit.wait_for_room()


def session(pipeline: Pipeline, slow_reader_s: float = 30.0) -> SessionRun:
    return SessionRun(
        key="AAAAAAAAAAAAAAAA",
        session_id="s-1",
        query="q",
        include_thoughts=False,
        pipeline=pipeline,
        telemetry=captured_telemetry().runtime.telemetry,
        timeout_s=30,
        resume_window_s=0,
        replay_bytes=4096,
        retry_ms=1000,
        on_closed=lambda _run: None,
        slow_reader_s=slow_reader_s,
    )


class Writer:
    """A ``FrameWriter`` that answers ``outcome(n)`` for the n-th frame it is offered."""

    def __init__(self, outcome: Callable[[int], WriteOutcome]) -> None:
        self.outcome = outcome
        self.offered = 0
        self.written: list[bytes] = []
        self.flushes = 0

    def write_now(self, frame: bytes) -> WriteOutcome:
        outcome = self.outcome(self.offered)
        self.offered += 1
        if outcome != "refused":
            self.written.append(frame)
        return outcome

    async def flush(self) -> None:
        self.flushes += 1


def sequence_numbers(frames: bytes) -> list[int]:
    ids = [line[4:] for line in frames.split(b"\r\n") if line.startswith(b"id: ")]
    parsed = [parse_last_event_id(i.decode()) for i in ids]
    return [p.seq for p in parsed if p is not None]


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("all written", lambda _n: "written"),
        ("every third refused", lambda n: "refused" if n % 3 == 0 else "written"),
        ("every fourth waits", lambda n: "started" if n % 4 == 0 else "written"),
    ],
)
async def test_every_frame_reaches_the_reader_once_and_in_order(
    name: str, outcome: Callable[[int], WriteOutcome]
) -> None:
    run = session(Paced(40, gap_s=0.001))
    writer = Writer(outcome)
    run.start()
    reader = run.frames(writer=writer)
    # What the generator sends and what was written straight, in the order they went.
    sent: list[bytes] = []
    wrote = 0
    async for frame in reader:
        sent.extend(writer.written[wrote:])
        wrote = len(writer.written)
        sent.append(frame)
    await run.linger()
    seqs = sequence_numbers(b"".join(sent))
    assert seqs == list(range(len(seqs))) and len(seqs) == 43, name  # session, phase, 40, end
    assert writer.written, name  # most chunks went straight
    assert sum(1 for n in range(writer.offered) if outcome(n) == "started") == writer.flushes


class Bursts:
    """A phase's worth of events at once (``count`` of them, in one loop iteration), a pause,
    and again: what an offline phase does."""

    def __init__(self, bursts: int, count: int) -> None:
        self.bursts = bursts
        self.count = count

    async def run(self, query: str, emit: EventSink, *, include_thoughts: bool = True) -> None:
        for _ in range(self.bursts):
            await asyncio.sleep(0.01)
            for n in range(self.count):
                emit(Event("response", ResponseEvent(chunk=f"w{n} ")))


async def test_events_made_at_once_go_out_as_one_write() -> None:
    """Written straight, but still one write per batch of ready events (one send instead
    of a dozen: each is a system call in the server)."""
    run = session(Bursts(bursts=5, count=12))
    writer = Writer(lambda _n: "written")
    run.start()
    frames = [frame async for frame in run.frames(writer=writer)]
    await run.linger()
    assert len(writer.written) + len(frames) <= 5 + 2  # a write per burst, the first, the end
    seqs = sequence_numbers(b"".join([*frames[:1], *writer.written, *frames[1:]]))
    assert seqs == list(range(62))  # the session event, 60 chunks, the end


async def test_the_first_frame_and_the_terminal_one_go_through_the_reader() -> None:
    run = session(Paced(5, gap_s=0.001))
    writer = Writer(lambda _n: "written")
    run.start()
    frames = [frame async for frame in run.frames(writer=writer)]
    await run.linger()
    assert frames[0].startswith(b"retry: 1000\r\n\r\n")
    assert b"event: complete" in frames[-1]
    assert not [w for w in writer.written if b"retry:" in w or b"event: complete" in w]


async def test_a_reader_whose_straight_write_fails_ends_and_is_let_go() -> None:
    class Failing(Writer):
        async def flush(self) -> None:
            raise SendTimeoutError()

    run = session(Paced(10, gap_s=0.005))
    run.start()
    with pytest.raises(SendTimeoutError):
        async for _frame in run.frames(writer=Failing(lambda _n: "started")):
            pass
    assert not run._has_reader
    await run.close()


# --- the SSE response: straight writes, and the send timeout ---------------------------


async def drive(response: DirectEventSourceResponse, send: Callable[[Message], Any]) -> float:
    """Runs the response to its end; the seconds it took."""

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client never says it left
        return {"type": "http.disconnect"}  # pragma: no cover

    scope = {"type": "http", "method": "GET", "headers": [], SERVER_SEND: send}
    started = time.monotonic()
    await response(scope, receive, send)
    return time.monotonic() - started


async def test_a_reader_that_stops_taking_frames_is_cut_after_the_send_timeout() -> None:
    """The connection takes the start and three frames, then nothing: the send waiting
    (a straight write, or the response's own) ends by the send timeout."""
    run = session(Paced(1000, gap_s=0.002))
    taken = 0

    async def send(message: Message) -> None:
        nonlocal taken
        if message["type"] == "http.response.body":
            taken += 1
            if taken > 3:
                await asyncio.Event().wait()

    response = DirectEventSourceResponse(None, ping=0, send_timeout=0.3)
    response.body_iterator = run.frames(writer=response)
    run.start()
    started = time.monotonic()
    with pytest.raises(SendTimeoutError):
        await drive(response, send)
    assert time.monotonic() - started < 0.3 + 1.5  # the timeout, not the 2 s of the report
    assert taken == 4
    await run.close()


async def test_a_straight_write_that_waits_a_little_goes_out_in_order() -> None:
    """The connection's buffer is full for a moment (a send waits 50 ms, every tenth):
    the frames behind it wait, none is lost or reordered, and nothing times out."""
    run = session(Paced(60, gap_s=0.002))
    bodies: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            if len(bodies) % 10 == 9:
                await asyncio.sleep(0.05)
            bodies.append(message.get("body", b""))

    response = DirectEventSourceResponse(None, ping=0, send_timeout=5)
    response.body_iterator = run.frames(writer=response)
    outcomes: Counter[str] = Counter()
    write_now = response.write_now

    def counted(frame: bytes) -> WriteOutcome:
        outcome = write_now(frame)
        outcomes[outcome] += 1
        return outcome

    response.write_now = counted  # type: ignore[method-assign]
    run.start()
    await drive(response, send)
    await run.linger()
    seqs = sequence_numbers(b"".join(bodies))
    assert seqs == list(range(63))
    assert outcomes["written"] >= 5 and outcomes["started"] >= 1, outcomes


async def test_over_a_real_socket_a_paced_report_is_written_straight(
    harness_factory: HarnessFactory,
    live_server: LiveServerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn, a paced model: the report's chunks go out from the session's task, and
    the client gets every event once, in order."""
    outcomes: Counter[str] = Counter()
    write_now = DirectEventSourceResponse.write_now

    def counted(self: DirectEventSourceResponse, frame: bytes) -> WriteOutcome:
        outcome = write_now(self, frame)
        outcomes[outcome] += 1
        return outcome

    monkeypatch.setattr(DirectEventSourceResponse, "write_now", counted)
    fake = FakeAPI(reply=" ".join(f"w{n}" for n in range(30)), chunk_gap_s=0.005)
    async with live_server(fake.app()) as api:
        h = harness_factory(**provider_settings(api.url))
        async with (
            live_server(h.app) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        ):
            response = await client.post("/api/fit-check/stream", json={"query": "Go"})
    events = parse_sse(response.text)
    assert events[-1][0] == "complete"
    report = "".join(d["chunk"] for n, d in events if n == "response")
    assert report == " ".join(f"w{n}" for n in range(30))
    ids = [
        line.removeprefix("id: ") for line in response.text.splitlines() if line.startswith("id: ")
    ]
    seqs = [p.seq for p in map(parse_last_event_id, ids) if p is not None]
    assert seqs == list(range(len(seqs)))
    assert outcomes["written"] >= 20  # of the 30 report chunks
