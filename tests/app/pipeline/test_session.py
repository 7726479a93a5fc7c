"""One session, driven step by step: which reconnects it accepts, and how it ends."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Any, cast

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider

from app.pipeline.event_ids import parse_last_event_id
from app.pipeline.events import Event, PhaseEvent, PipelineError, ResponseEvent
from app.pipeline.live_sessions import LiveSessions, SessionLimitReached
from app.pipeline.phases import EventSink
from app.pipeline.session import Pipeline, SessionRun, SessionState, WriteOutcome
from app.store.redis_log import SessionStore
from otel.facade import Telemetry, TraceRef
from otel.testing import CapturedTelemetry, captured_telemetry
from tests.app.api.test_direct_write import Bursts, Paced, Writer, sequence_numbers
from tests.fakes import counting_providers
from tests.helpers import LiveClientFactory, wait_until


class SteppedPipeline:
    """Emits one phase event per ``step()``; finishes on ``finish()``."""

    def __init__(self) -> None:
        self.steps: asyncio.Queue[bool] = asyncio.Queue()
        self.running = asyncio.Event()

    async def run(self, query: str, emit: EventSink, *, include_thoughts: bool = True) -> None:
        self.running.set()
        while await self.steps.get():
            emit(Event("phase", PhaseEvent(phase="connecting", message=query)))

    async def step(self, run: SessionRun, expected_next: int) -> None:
        await self.steps.put(True)
        async with asyncio.timeout(5):  # a session that ended early fails, not hangs
            while not run.can_resume_after(expected_next - 1):
                await asyncio.sleep(0)

    async def finish(self) -> None:
        await self.steps.put(False)


def session_run(
    pipeline: Pipeline,
    telemetry: Telemetry,
    *,
    key: str = "AAAAAAAAAAAAAAAA",
    session_id: str = "s-1",
    query: str = "q",
    resume_window_s: float = 0,
    close_timeout_s: float = 5.0,
    timeout_s: float = 30,
    on_closed: Callable[[SessionRun], None] = lambda _run: None,
    include_thoughts: bool = False,
    store: SessionStore | None = None,
) -> SessionRun:
    """A session with small test sizes (4 KiB of replay, a 30 s timeout)."""
    return SessionRun(
        key=key,
        session_id=session_id,
        query=query,
        include_thoughts=include_thoughts,
        store=store,
        pipeline=pipeline,
        telemetry=telemetry,
        timeout_s=timeout_s,
        resume_window_s=resume_window_s,
        replay_bytes=4096,
        retry_ms=1000,
        on_closed=on_closed,
        close_timeout_s=close_timeout_s,
    )


def lines_of(json_log: io.StringIO) -> list[dict[str, Any]]:
    """The service's own JSON log lines written so far (not a library's: an exporter an
    earlier test left retrying may still log)."""
    lines = [json.loads(text) for text in json_log.getvalue().splitlines()]
    return [line for line in lines if line["logger"].startswith("fit_check.")]


@pytest.fixture
async def session() -> AsyncIterator[tuple[SessionRun, SteppedPipeline, list[SessionRun]]]:
    pipeline = SteppedPipeline()
    closed: list[SessionRun] = []
    telemetry = captured_telemetry().runtime.telemetry
    run = session_run(pipeline, telemetry, on_closed=closed.append)
    yield run, pipeline, closed
    await run.close()


async def test_resumable_only_after_events_it_sent_and_not_after_the_end(
    session: tuple[SessionRun, SteppedPipeline, list[SessionRun]],
) -> None:
    run, pipeline, _ = session
    assert not run.can_resume_after(0)  # nothing sent yet, not even the session event
    run.start()
    await pipeline.step(run, expected_next=2)  # the session event (0) and a phase (1)
    assert run.can_resume_after(0) and run.can_resume_after(1)
    assert not run.can_resume_after(2)  # an id from the future
    reader = run.frames(after=None)
    first = await anext(reader)
    assert first.startswith(b"retry: 1000\r\n\r\nid: AAAAAAAAAAAAAAAA.0\r\n")
    assert data_of(first, "session") == {"session_id": "s-1", "trace_id": None}
    await pipeline.finish()
    rest = b"".join([frame async for frame in reader])
    terminal = rest.split(b"\r\n")[-5]
    parsed = parse_last_event_id(terminal.decode().removeprefix("id: "))
    assert parsed is not None and parsed.terminal and parsed.seq == 2
    assert not run.can_resume_after(2)  # the terminal event was the last one
    await run.linger()
    assert run.finished and not run.can_resume_after(1)


class Flooding:
    """A runaway model: ``chunks`` report chunks of 1,000 characters, as fast as the
    session lets it (it honours backpressure as the gateway does)."""

    def __init__(self, chunks: int = 200) -> None:
        self.chunks = chunks
        self.emitted = 0

    async def run(self, query: str, emit: EventSink, *, include_thoughts: bool) -> None:
        for _ in range(self.chunks):
            emit(Event("response", ResponseEvent(chunk="x" * 1000)))
            self.emitted += 1
            if emit.congested:
                await emit.wait_for_room()


def flooded_run(pipeline: Flooding, captured: CapturedTelemetry, **overrides: Any) -> SessionRun:
    settings: dict[str, Any] = {
        "key": "DDDDDDDDDDDDDDDD",
        "session_id": "s-flood",
        "query": "q",
        "include_thoughts": False,
        "pipeline": pipeline,
        "telemetry": captured.runtime.telemetry,
        "timeout_s": 30,
        "resume_window_s": 0,
        "replay_bytes": 4096,
        "retry_ms": 1000,
        "on_closed": lambda _run: None,
        "send_buffer_bytes": 16_384,
        "slow_reader_s": 5,
    }
    return SessionRun(**{**settings, **overrides})


#: What a flooded session may hold: the replay and send allowances and one frame.
FLOOD_BOUND = 4096 + 16_384 + 1100


async def test_a_reader_that_keeps_up_is_never_cut_however_small_the_replay_buffer(
    json_log: io.StringIO,
) -> None:
    """200 KB through a 4 KiB replay buffer: the frames the reader has not had yet are
    kept (and the producer waits for it), so it gets every one and the terminal event."""
    pipeline = Flooding()
    captured = captured_telemetry()
    run = flooded_run(pipeline, captured)
    run.start()
    frames = b""
    async for batch in run.frames(after=None):
        frames += batch
        assert run.held_bytes <= FLOOD_BOUND
    await run.linger()
    assert frames.count(b"event: response") == 200
    assert data_of(frames, "complete")
    assert [line for line in lines_of(json_log) if line["level"] != "INFO"] == []
    assert captured.value("fit_check.requests", status="success") == 1


async def test_a_reader_that_takes_nothing_ends_the_session_with_slow_reader(
    json_log: io.StringIO,
) -> None:
    pipeline = Flooding()
    captured = captured_telemetry()
    run = flooded_run(pipeline, captured, slow_reader_s=0.2)
    run.start()
    reader = run.frames(after=None)
    await anext(reader)  # and then it takes nothing more
    await wait_until(lambda: run.ended)  # its terminal event waits for the reader
    assert pipeline.emitted < 40  # it stopped at the send allowance, not at 200
    rest = b"".join([frame async for frame in reader])  # the client reads again, late
    await run.linger()
    assert data_of(rest, "error")["code"] == "SLOW_READER"
    warnings = [line["message"] for line in lines_of(json_log) if line["level"] == "WARNING"]
    assert warnings == ["Reader took no frames for 0.2s; stopping the session"]
    (completed,) = [line for line in lines_of(json_log) if line["message"] == "Request completed"]
    assert (completed["status"], completed["reason"]) == ("cancelled", "slow_reader")
    assert captured.value("fit_check.requests", status="cancelled") == 1


async def test_with_nobody_reading_the_pipeline_waits_and_memory_stays_bounded() -> None:
    pipeline = Flooding()
    captured = captured_telemetry()
    run = flooded_run(pipeline, captured, resume_window_s=30, slow_reader_s=0.1)
    run.start()
    reader = run.frames(after=None)
    await anext(reader)
    await reader.aclose()  # the client left; it may come back within 30 s
    await wait_until(lambda: run.congested)
    emitted = pipeline.emitted
    await asyncio.sleep(0.3)  # past the slow-reader bound: waiting for nobody is no stall
    assert pipeline.emitted == emitted < 40
    assert run.held_bytes <= FLOOD_BOUND
    assert run.lingering_since is not None and not run.finished
    back = b"".join([frame async for frame in run.frames(after=0)])  # it came back
    assert back.count(b"event: response") == 200
    await run.linger()
    assert captured.value("fit_check.requests", status="success") == 1


class Live:
    def __init__(self, key: str, client: str = "10.0.0.1") -> None:
        self.key = key
        self.client = client
        self.opened_at = time.monotonic()
        self.lingering_since: float | None = None
        self.abandoned = False

    def abandon(self) -> None:
        self.abandoned = True


async def test_the_live_set_admits_up_to_its_limit_and_forgets_exactly_once() -> None:
    live: LiveSessions[Live] = LiveSessions(limit=1)
    first, second = Live("a"), Live("b")
    live.add(first)
    with pytest.raises(SessionLimitReached, match=r"^1 sessions are streaming"):
        live.add(second)
    assert live.get("a") is first and live.active == 1
    assert not await live.wait_empty(0.01)
    live.discard(second)  # not in: nothing changes
    assert live.active == 1
    live.discard(first)
    live.discard(first)
    assert live.active == 0 and live.get("a") is None
    assert await live.wait_empty(0.01)


def test_lingering_sessions_leave_the_cap_to_streams_and_the_oldest_go_first() -> None:
    live: LiveSessions[Live] = LiveSessions(limit=2, max_lingering=1, per_client=10)
    old, newer = Live("a"), Live("b")
    live.add(old)
    live.add(newer)
    old.lingering_since, newer.lingering_since = 1.0, 2.0  # both clients left
    live.add(Live("c", client="10.0.0.2"))  # lingering sessions do not hold the cap
    assert (old.abandoned, newer.abandoned) == (True, False)  # one lingering allowed
    live.add(Live("d", client="10.0.0.2"))
    with pytest.raises(SessionLimitReached) as refused:
        live.add(Live("e", client="10.0.0.3"))
    assert str(refused.value) == (
        "2 sessions are streaming (the limit is 2) and 2 wait for their clients to come back"
    )
    assert 1 <= refused.value.retry_after_s <= 5  # the running estimate, not a constant


def test_one_client_holds_at_most_its_share() -> None:
    live: LiveSessions[Live] = LiveSessions(limit=10, per_client=2)
    live.add(Live("a"))
    lingering = Live("b")
    live.add(lingering)
    lingering.lingering_since = 1.0  # a lingering session still counts for its client
    with pytest.raises(SessionLimitReached, match=r"^this client already has 2 sessions"):
        live.add(Live("c"))
    live.add(Live("d", client="10.0.0.2"))  # another client is not affected


def test_retry_after_follows_how_long_sessions_take() -> None:
    live: LiveSessions[Live] = LiveSessions(limit=1)
    for n in range(30):  # sessions that took 30 s each
        done = Live(f"x{n}")
        live.add(done)
        done.opened_at -= 30
        live.discard(done)
    live.add(Live("a"))
    with pytest.raises(SessionLimitReached) as refused:
        live.add(Live("b"))
    assert 25 <= refused.value.retry_after_s <= 30


async def test_a_frame_without_a_phase_yet_is_sent_and_first_event_waits_for_the_phase(
    session: tuple[SessionRun, SteppedPipeline, list[SessionRun]],
) -> None:
    run, pipeline, _ = session
    run.start()
    reader = run.frames(after=None)
    only_session = await anext(reader)  # before the pipeline emitted anything else
    assert b"event: session" in only_session and b"event: phase" not in only_session
    await pipeline.step(run, expected_next=2)
    assert b"event: phase" in await anext(reader)
    await pipeline.finish()
    assert b"event: complete" in b"".join([frame async for frame in reader])
    await run.linger()


async def test_a_cancelled_request_lasts_until_its_client_left_not_its_window(
    live_client: LiveClientFactory,
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=5)
    async with live_client(providers=providers, resume_window_s=1.0) as (h, client, _):
        async with client.stream("POST", "/api/fit-check/stream", json={"query": "Go"}) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: phase"):
                    break  # and hang up at once
        await wait_until(lambda: h.service.sessions.active == 0)
    (point,) = [
        p
        for metric, p in h.telemetry.metric_points()
        if metric.name == "fit_check.request.duration"
    ]
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 1
    assert getattr(point, "sum", 0.0) < 0.9  # the 1 s resume window is not in it


def stepped_run(
    *,
    resume_window_s: float = 0,
    close_timeout_s: float = 5.0,
    on_closed: Callable[[SessionRun], None] = lambda _run: None,
    store: SessionStore | None = None,
) -> tuple[SessionRun, SteppedPipeline, CapturedTelemetry]:
    pipeline = SteppedPipeline()
    captured = captured_telemetry()
    run = session_run(
        pipeline,
        captured.runtime.telemetry,
        key="BBBBBBBBBBBBBBBB",
        session_id="s-2",
        query="four",
        resume_window_s=resume_window_s,
        close_timeout_s=close_timeout_s,
        on_closed=on_closed,
        store=store,
    )
    return run, pipeline, captured


async def test_time_to_first_event_is_recorded_once_when_the_first_phase_is_sent(
    json_log: io.StringIO,
) -> None:
    run, pipeline, captured = stepped_run()
    run.start()
    reader = run.frames(after=None)
    await anext(reader)  # the session event alone
    assert captured.value("fit_check.time_to_first_event") == 0
    await pipeline.step(run, expected_next=2)
    await anext(reader)
    assert captured.value("fit_check.time_to_first_event") == 1
    await pipeline.step(run, expected_next=3)
    await anext(reader)
    await pipeline.finish()
    assert b"event: complete" in b"".join([frame async for frame in reader])
    await run.linger()
    assert captured.value("fit_check.time_to_first_event") == 1
    (started,) = [line for line in lines_of(json_log) if line["message"] == "Request started"]
    assert started["query_length"] == len("four") and started["session_id"] == "s-2"


async def test_the_task_is_named_after_its_session() -> None:
    run, _, _ = stepped_run()
    run.start()
    assert "fit-check s-2" in {task.get_name() for task in asyncio.all_tasks()}
    await run.close()


async def test_shutting_down_before_the_task_ran_cancels_it_quietly() -> None:
    run, _, captured = stepped_run()
    run.start()
    run.shut_down()  # the task has not run a step yet: no analysis record exists
    await wait_until(lambda: run.finished)
    await run.close()
    assert captured.value("fit_check.requests", status="success") == 0


async def test_shutting_down_a_session_nobody_reads_cancels_it_at_once() -> None:
    run, pipeline, captured = stepped_run(resume_window_s=30)
    run.start()
    await pipeline.running.wait()
    run.shut_down()
    # Not a SHUTTING_DOWN event waiting for a reader that is not there: the task ends.
    await wait_until(lambda: run.finished)
    assert captured.value("fit_check.requests", status="cancelled") == 1
    await run.close()


async def test_a_session_whose_client_never_got_an_event_closes_without_a_window(
    json_log: io.StringIO,
) -> None:
    run, pipeline, captured = stepped_run(resume_window_s=30)
    run.start()
    await pipeline.running.wait()
    async with asyncio.timeout(5):  # not the 30 s window: nobody has an id to come back with
        await run.linger()
    assert run.finished
    assert captured.value("fit_check.requests", status="cancelled") == 1
    (completed,) = [line for line in lines_of(json_log) if line["message"] == "Request completed"]
    assert (completed["status"], completed["reason"]) == ("cancelled", "client_gone")


async def test_a_session_that_never_started_is_shut_down_as_nothing_and_closed_freed() -> None:
    closed: list[SessionRun] = []
    run = session_run(
        SteppedPipeline(), captured_telemetry().runtime.telemetry, on_closed=closed.append
    )
    run.shut_down()  # draining while it opens: there is no task to stop yet
    assert run.state is SessionState.OPENED
    await run.close()
    assert closed == [run] and run.finished


async def test_a_cancelled_closer_still_waits_for_the_task_it_stopped() -> None:
    """The request closing a session may itself be cancelled (its client is gone): the
    session's task is still awaited, so its span and metrics are recorded before the
    live set lets the slot go."""

    class SlowToStop:
        running = asyncio.Event()

        async def run(self, query: str, emit: EventSink, *, include_thoughts: bool) -> None:
            self.running.set()
            try:
                await asyncio.sleep(60)
            finally:
                await asyncio.shield(asyncio.sleep(0.2))  # cleans up on its way out

    pipeline = SlowToStop()
    run = session_run(pipeline, captured_telemetry().runtime.telemetry, session_id="s-slow")
    run.start()
    await pipeline.running.wait()
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "fit-check s-slow"]
    async with anyio.create_task_group() as group:  # as the server's response runs it
        group.start_soon(run.close)
        await wait_until(lambda: run.finished)  # closing: the task was told to stop
        group.cancel_scope.cancel()
    assert task.done()


async def test_the_resume_window_is_waited_in_full_and_restarts_after_a_reconnect() -> None:
    window = 0.3
    run, pipeline, _ = stepped_run(resume_window_s=window)
    run.start()
    loop = asyncio.get_running_loop()
    first = run.frames(after=None)
    await anext(first)
    await first.aclose()  # the client left
    lingering = asyncio.create_task(run.linger())
    second = run.frames(after=0)  # it came back within the window
    await pipeline.step(run, expected_next=2)
    assert b"event: phase" in await anext(second)
    await asyncio.sleep(window * 2)  # a reader holds the session however long it stays
    assert not run.finished and not lingering.done()
    await second.aclose()  # and left again: a new window starts now
    left = loop.time()
    await lingering  # the linger neither failed nor ended early
    assert loop.time() - left >= window
    assert run.finished


async def test_a_task_that_will_not_stop_holds_close_for_its_timeout_only(
    json_log: io.StringIO,
) -> None:
    class Stubborn:
        running = asyncio.Event()
        stopped = asyncio.Event()

        async def run(self, query: str, emit: EventSink, *, include_thoughts: bool) -> None:
            self.running.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await self.stopped.wait()  # ignores the first cancellation

    stubborn = Stubborn()
    telemetry = captured_telemetry().runtime.telemetry
    run = session_run(stubborn, telemetry, key="CCCCCCCCCCCCCCCC", close_timeout_s=0.2)
    run.start()
    await stubborn.running.wait()
    async with asyncio.timeout(5):
        await run.close()
    errors = [line["message"] for line in lines_of(json_log) if line["level"] == "ERROR"]
    assert errors == ["Session task did not stop within 0.2s"]
    stubborn.stopped.set()
    await wait_until(lambda: run.finished)


def data_of(frames: bytes, event: str) -> dict[str, Any]:
    """The JSON data of the first ``event`` in a run of SSE frames."""
    for frame in frames.split(b"\r\n\r\n"):
        lines = frame.decode().split("\r\n")
        if f"event: {event}" in lines:
            (data,) = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
            parsed: dict[str, Any] = json.loads(data)
            return parsed
    raise AssertionError(f"no {event} event in {frames!r}")


async def test_the_complete_event_says_how_long_the_session_ran() -> None:
    run, pipeline, _ = stepped_run()
    loop = asyncio.get_running_loop()
    started = loop.time()
    run.start()
    reader = run.frames(after=None)
    await anext(reader)
    await asyncio.sleep(0.1)  # the pipeline is busy for at least this long
    await pipeline.finish()
    rest = b"".join([frame async for frame in reader])
    elapsed_ms = (loop.time() - started) * 1000
    assert 100 <= data_of(rest, "complete")["duration_ms"] <= elapsed_ms
    await run.linger()


async def test_a_draining_instance_tells_its_reader_and_says_why(json_log: io.StringIO) -> None:
    run, pipeline, captured = stepped_run()
    run.start()
    await pipeline.running.wait()
    reader = run.frames(after=None)
    await anext(reader)
    run.shut_down()
    rest = b"".join([frame async for frame in reader])
    assert data_of(rest, "error")["code"] == "SHUTTING_DOWN"
    await run.linger()
    warnings = [line["message"] for line in lines_of(json_log) if line["level"] == "WARNING"]
    assert warnings == ["Request stopped: the instance is shutting down"]
    assert data_of(rest, "error")["message"] == "The service is restarting; send it again"
    assert captured.value("fit_check.requests", status="cancelled") == 1


class Failing:
    """A pipeline that ends one way: too slow, with a pipeline error, or with a bug."""

    def __init__(self, how: str) -> None:
        self.how = how

    async def run(self, query: str, emit: EventSink, *, include_thoughts: bool) -> None:
        if self.how == "slow":
            await asyncio.sleep(60)
        if self.how == "llm":
            raise PipelineError("LLM_ERROR", "llm provider failed (HTTPStatusError)")
        raise RuntimeError("a bug, with text nobody should see")


@pytest.mark.parametrize(
    ("how", "status", "code", "message", "line"),
    [
        (
            "slow",
            "timeout",
            "TIMEOUT",
            "The analysis took longer than 0.2s",
            {"level": "WARNING", "message": "Request timed out", "timeout_s": 0.2},
        ),
        (
            "llm",
            "error",
            "LLM_ERROR",
            "llm provider failed (HTTPStatusError)",
            {
                "level": "WARNING",
                "message": "Request failed: LLM_ERROR: llm provider failed (HTTPStatusError)",
                "code": "LLM_ERROR",
            },
        ),
        (
            "bug",
            "error",
            "AGENT_ERROR",
            "The analysis failed unexpectedly",
            {"level": "ERROR", "message": "Pipeline crashed"},
        ),
    ],
)
async def test_each_failure_ends_with_its_event_its_line_and_its_count(
    json_log: io.StringIO,
    how: str,
    status: str,
    code: str,
    message: str,
    line: dict[str, object],
) -> None:
    captured = captured_telemetry()
    run = session_run(Failing(how), captured.runtime.telemetry, timeout_s=0.2)
    run.start()
    frames = b"".join([frame async for frame in run.frames(after=None)])
    await run.linger()
    assert data_of(frames, "error") == {"code": code, "message": message}
    lines = lines_of(json_log)
    failures = [entry for entry in lines if entry["level"] in ("WARNING", "ERROR")]
    assert len(failures) == 1 and line.items() <= failures[0].items(), failures
    assert ("exception" in failures[0]) is (how == "bug")
    assert "nobody should see" not in frames.decode()
    assert captured.value("fit_check.requests", status=status) == 1


async def test_a_session_read_to_its_end_counts_its_own_outcome_with_no_window() -> None:
    """The reader's stream (and its span) ends once the task, woken from "delivered", has
    counted the outcome; lingering never cancels that task (which counted every such
    session cancelled)."""
    run, pipeline, captured = stepped_run(resume_window_s=0)
    run.start()
    reader = run.frames(after=None)
    await anext(reader)
    await pipeline.finish()
    assert b"event: complete" in b"".join([frame async for frame in reader])
    assert captured.value("fit_check.requests", status="success") == 1
    await run.linger()
    assert captured.value("fit_check.requests", status="success") == 1
    assert captured.value("fit_check.requests", status="cancelled") == 0


# --- the shared store's side (what ``SessionMirror`` reads and reports) ----------------


def lingering_since(run: SessionRun) -> float | None:
    """Read anew (a call: a type checker keeps no earlier answer for it)."""
    return run.lingering_since


async def test_a_reader_on_another_replica_holds_the_session_as_a_local_one_does() -> None:
    run, pipeline, _ = stepped_run(resume_window_s=30)
    run.start()
    await pipeline.step(run, expected_next=2)  # the session event (0) and a phase (1)
    assert lingering_since(run) is None  # nobody was sent anything: nothing to wait for
    run.remote_reader("1")  # a replica's reader was sent the frames before 1
    assert run._buffer.unsent_bytes == len(b"".join(run.frames_from(1) or []))
    run.abandon()  # it is read, elsewhere: not abandoned
    assert (run.state, run.streaming) == (SessionState.RUNNING, True)
    await asyncio.sleep(0.01)
    reading_until = time.monotonic()
    run.remote_reader(None)  # it left
    since = lingering_since(run)
    assert since is not None and reading_until <= since <= time.monotonic()
    assert not run.streaming
    run.remote_reader("not a sequence number")  # not a reader either
    assert lingering_since(run) == since
    run.remote_reader("2")  # it came back, there
    assert lingering_since(run) is None and run._buffer.unsent_bytes == 0
    await run.close()
    assert not run.streaming  # over: not counted against the cap any more


async def test_a_reader_here_keeps_its_frames_whatever_a_replica_reads() -> None:
    run, pipeline, _ = stepped_run(resume_window_s=30)
    run.start()
    await pipeline.step(run, expected_next=2)
    reader = run.frames(after=None)
    await anext(reader)  # sent, not yet known to be taken
    unsent = run._buffer.unsent_bytes
    run.remote_reader("2")
    assert run._buffer.unsent_bytes == unsent > 0
    run.remote_reader(None)  # the replica's reader left; this one still reads
    assert lingering_since(run) is None
    await reader.aclose()
    await run.close()


async def test_a_stalled_reader_is_the_reason_its_session_is_counted_cancelled(
    json_log: io.StringIO,
) -> None:
    run, pipeline, _ = stepped_run()
    run.reader_stalled()  # before the request began: nothing to say it on
    run.start()
    reader = run.frames(after=None)
    await anext(reader)
    await pipeline.running.wait()
    run.reader_stalled()
    await reader.aclose()
    await run.linger()
    (completed,) = [line for line in lines_of(json_log) if line["message"] == "Request completed"]
    assert (completed["status"], completed["reason"]) == ("cancelled", "slow_reader")


async def test_a_stall_after_another_stop_keeps_the_first_reason(json_log: io.StringIO) -> None:
    run, pipeline, _ = stepped_run()
    run.start()
    await pipeline.running.wait()
    run.shut_down()  # nobody reads: cancelled at once, for the shutdown
    run.reader_stalled()
    await run.linger()
    (completed,) = [line for line in lines_of(json_log) if line["message"] == "Request completed"]
    assert (completed["status"], completed["reason"]) == ("cancelled", "shutdown")


async def test_what_the_mirror_reads_of_a_session() -> None:
    run, pipeline, _ = stepped_run()
    assert (run.traceparent, run.terminal_seq, run.first_seq) == (None, None, 0)
    run.trace = TraceRef("1" * 32, f"00-{'1' * 32}-{'2' * 16}-01")
    assert run.traceparent == f"00-{'1' * 32}-{'2' * 16}-01"
    run.start()
    reader = run.frames(after=None)
    first = await anext(reader)
    assert first.removeprefix(b"retry: 1000\r\n\r\n") == b"".join(run.frames_from(0) or [])
    await pipeline.finish()
    await wait_until(lambda: run.terminal_seq is not None)
    assert run.terminal_seq == 1 and run.frames_from(2) == []
    await reader.aclose()
    await run.close()


async def test_only_the_sessions_own_task_may_stop_it_from_inside() -> None:
    run, _, _ = stepped_run()
    run.start()
    with pytest.raises(RuntimeError, match=r"^only the session's own task stops itself$"):
        await run._stop_self(("SLOW_READER", "", "slow_reader"))
    assert run._stop is None  # and this task is not cancelled either
    await run.close()


async def test_a_reconnect_at_the_edges_is_told_future_ok_or_gone() -> None:
    run, pipeline, _ = stepped_run()
    run.start()
    await pipeline.step(run, expected_next=2)  # the session event (0) and a phase (1)
    assert [run.resume_verdict(seq) for seq in (0, 1, 2)] == ["ok", "ok", "future"]
    await pipeline.finish()
    await wait_until(lambda: run.ended)  # the terminal event (2) waits for a reader
    assert [run.resume_verdict(seq) for seq in (1, 2, 3)] == ["ok", "gone", "gone"]
    await run.close()
    assert run.resume_verdict(0) == "gone"


async def test_nothing_is_written_straight_while_a_send_waits_for_the_connection() -> None:
    """A straight write that has to wait is finished by the reader's task; a frame made
    meanwhile waits for that task too, instead of going out beside the unfinished one."""

    class Slow(Writer):
        def __init__(self) -> None:
            super().__init__(lambda n: "started" if n % 2 == 0 else "written")
            self.waiting = False
            self.overlaps = 0

        def write_now(self, frame: bytes) -> WriteOutcome:
            self.overlaps += self.waiting
            outcome = super().write_now(frame)
            self.waiting = outcome == "started"
            return outcome

        async def flush(self) -> None:
            await asyncio.sleep(0.005)  # the connection takes its time
            self.waiting = False
            await super().flush()

    run = session_run(Paced(30), captured_telemetry().runtime.telemetry)
    writer = Slow()
    run.start()
    frames = [frame async for frame in run.frames(writer=writer)]
    await run.linger()
    assert writer.flushes > 0 and writer.overlaps == 0
    seqs = sequence_numbers(b"".join([frames[0], *writer.written, *frames[1:]]))
    assert sorted(seqs) == list(range(33))  # the session event, the phase, 30 chunks, the end


async def test_two_frames_made_at_once_are_written_straight_together() -> None:
    run = session_run(Bursts(bursts=3, count=2), captured_telemetry().runtime.telemetry)
    writer = Writer(lambda _n: "written")
    run.start()
    frames = [frame async for frame in run.frames(writer=writer)]
    await run.linger()
    assert writer.written and {len(sequence_numbers(w)) for w in writer.written} == {2}
    assert sequence_numbers(b"".join([frames[0], *writer.written, *frames[1:]])) == list(range(8))


async def test_a_writer_that_fails_leaves_its_frames_to_the_reader(json_log: io.StringIO) -> None:
    class Broken(Writer):
        def write_now(self, frame: bytes) -> WriteOutcome:
            raise RuntimeError("a bug in the writer")

    run = session_run(Paced(3, gap_s=0.001), captured_telemetry().runtime.telemetry)
    run.start()
    frames = b"".join([frame async for frame in run.frames(writer=Broken(lambda _n: "written"))])
    await run.linger()
    assert sequence_numbers(frames) == list(range(6))  # the session, the phase, 3, the end
    errors = [line["message"] for line in lines_of(json_log) if line["level"] == "ERROR"]
    assert errors and set(errors) == {"Writing frames straight to the reader failed"}


class RecordingStore(SessionStore):
    """The shared store, as the session's mirror uses it: writes, renewals and sessions
    given up recorded, ``reader`` what a renewal reports of a reader on another replica.
    No Redis. With ``answering`` given, writes hang until it is set, as Redis does when its
    network goes quiet."""

    def __init__(self, answering: asyncio.Event | None = None) -> None:
        self.lease_s = 0.15
        self.reader: str | None = None
        self.answering = answering
        self.writing = asyncio.Event()
        self.written: list[tuple[str, int, int | None]] = []  # key, frames, terminal
        self.renewals: list[tuple[str, bool]] = []  # key, capped
        self.abandoned: list[str] = []

    def untraced(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def write(
        self,
        stream_key: str,
        frames: list[tuple[int, bytes]],
        *,
        terminal_seq: int | None,
        first_seq: int,
        opening: tuple[str, str | None] | None = None,
    ) -> None:
        self.writing.set()
        if self.answering is not None:
            await self.answering.wait()
        self.written.append((stream_key, len(frames), terminal_seq))

    async def renew(
        self, stream_key: str, *, first_seq: int, streaming: bool, capped: bool
    ) -> str | None:
        self.renewals.append((stream_key, capped))
        return self.reader

    async def reader_state(self, stream_key: str) -> str | None:
        return self.reader

    async def abandon(self, stream_key: str) -> None:
        self.abandoned.append(stream_key)


async def test_a_session_with_a_store_copies_its_frames_and_hears_of_readers_elsewhere() -> None:
    store = RecordingStore()
    run, pipeline, captured = stepped_run(resume_window_s=30, store=store)
    run.start()
    await pipeline.step(run, expected_next=2)
    await wait_until(lambda: sum(frames for _, frames, _ in store.written) == 2)
    store.reader = "1"  # a replica's reader reads it...
    await wait_until(lambda: run._remote_reader)
    store.reader = None  # ...and leaves: nobody reads it now, anywhere
    await wait_until(lambda: lingering_since(run) is not None)
    await pipeline.finish()
    await wait_until(lambda: store.written[-1][2] == 2)  # the terminal frame is copied
    store.reader = "delivered"  # and a replica's reader was sent it
    await wait_until(lambda: run.state is SessionState.DELIVERED)
    await run.linger()
    assert {key for key, _, _ in store.written} == {run.key}
    assert set(store.renewals) == {(run.key, False)}  # not capped unless told
    assert captured.value("fit_check.requests", status="success") == 1
    assert store.abandoned == []  # it ended with its terminal frame


def silent_store_run(store: RecordingStore, close_timeout_s: float) -> SessionRun:
    telemetry = captured_telemetry().runtime.telemetry
    run = session_run(SteppedPipeline(), telemetry, store=store, close_timeout_s=close_timeout_s)
    run.start()
    return run


async def test_closing_waits_for_a_silent_store_for_its_timeout_only() -> None:
    store = RecordingStore(answering=asyncio.Event())
    run = silent_store_run(store, close_timeout_s=0.2)
    await store.writing.wait()
    async with asyncio.timeout(5):
        await run.close()
    assert run.state is SessionState.CLOSED


async def test_a_cancelled_closer_still_tells_the_store_the_session_is_given_up() -> None:
    """The request closing a session may itself be cancelled: the store still hears that
    the session ended without its terminal frame, so its lease and slot are freed now,
    not when the lease runs out."""
    answering = asyncio.Event()
    store = RecordingStore(answering)
    run = silent_store_run(store, close_timeout_s=5)
    await store.writing.wait()
    async with anyio.create_task_group() as group:  # as the server's response runs it
        group.start_soon(run.close)
        await wait_until(lambda: run._mirror is not None and run._mirror._stopping)
        group.cancel_scope.cancel()
        answering.set()
    assert store.abandoned == [run.key]


async def test_the_pipeline_is_run_as_asked_and_the_complete_event_says_what_it_cost() -> None:
    class Costly:
        asked: tuple[str, bool] | None = None

        async def run(self, query: str, emit: EventSink, *, include_thoughts: bool) -> None:
            self.asked = (query, include_thoughts)
            analysis = cast(SessionRun, emit)._analysis
            assert analysis is not None
            analysis.cost.add(0.0000014)  # priced calls: rounded to the micro-dollar
            analysis.cost.add(None)  # and one the price list does not know

    pipeline = Costly()
    run = session_run(
        pipeline,
        captured_telemetry().runtime.telemetry,
        key="FFFFFFFFFFFFFFFF",
        session_id="s-cost",
        query="what it costs",
        include_thoughts=True,
    )
    run.start()
    frames = b"".join([frame async for frame in run.frames(after=None)])
    await run.linger()
    assert pipeline.asked == ("what it costs", True)
    complete = data_of(frames, "complete")
    assert (complete["cost_usd"], complete["unpriced_calls"]) == (0.000001, 1)


async def test_no_reader_elsewhere_is_no_news() -> None:
    """The store says so at every renewal: it neither restarts the wait for the client
    nor counts as a reader leaving."""
    run, _, _ = stepped_run(resume_window_s=30)
    run.start()
    reader = run.frames(after=None)
    await anext(reader)
    await reader.aclose()
    since = lingering_since(run)
    await asyncio.sleep(0.01)
    run.remote_reader(None)
    assert since is not None and lingering_since(run) == since
    await run.close()


async def test_the_session_event_names_the_trace_the_session_was_opened_in() -> None:
    run, pipeline, _ = stepped_run()
    with TracerProvider().get_tracer("test").start_as_current_span("request") as span:
        run.start()  # as the opening request does, inside its server span
    context = span.get_span_context()
    trace_id = format(context.trace_id, "032x")
    assert run.traceparent == f"00-{trace_id}-{context.span_id:016x}-{context.trace_flags:02x}"
    reader = run.frames(after=None)
    assert data_of(await anext(reader), "session") == {"session_id": "s-2", "trace_id": trace_id}
    await pipeline.finish()
    assert data_of(b"".join([f async for f in reader]), "complete")["trace_id"] == trace_id
    await run.linger()


async def test_nothing_is_written_straight_while_the_reader_sends_a_frame_itself() -> None:
    """The reader's task may still be sending what it took (its connection's send can
    wait): frames made meanwhile go to it, not around it."""
    sending = False

    class Watching(Writer):
        overlaps = 0

        def write_now(self, frame: bytes) -> WriteOutcome:
            self.overlaps += sending
            return super().write_now(frame)

    run = session_run(Paced(20, gap_s=0.005), captured_telemetry().runtime.telemetry)
    writer = Watching(lambda _n: "written")
    run.start()
    await wait_until(lambda: run.held_bytes > 0)  # a frame is there for the reader at once
    wait_s = 0.03  # the first send takes its time; chunks are made meanwhile
    async for _frame in run.frames(writer=writer):
        sending = True
        await asyncio.sleep(wait_s)
        sending, wait_s = False, 0
    await run.linger()
    assert writer.written and writer.overlaps == 0


async def test_frames_whose_straight_write_waited_count_as_sent_once_it_is_done() -> None:
    """Otherwise they would hold the send allowance: the producer would wait for room
    that never comes, and the session would end as if its reader were slow."""
    captured = captured_telemetry()
    run = flooded_run(Flooding(chunks=60), captured, slow_reader_s=2)
    writer = Writer(lambda _n: "started")  # every straight write waits for the connection
    run.start()
    frames = b"".join([frame async for frame in run.frames(after=None, writer=writer)])
    await run.linger()
    assert writer.flushes > 0
    assert b"event: complete" in frames
    assert captured.value("fit_check.requests", status="success") == 1


async def test_a_reconnect_for_frames_already_dropped_gets_none_and_the_log_says_why(
    json_log: io.StringIO,
) -> None:
    run = flooded_run(Flooding(chunks=40), captured_telemetry())
    run.start()
    reader = run.frames(after=None)
    taken = b""
    while taken.count(b"event: response") < 10:
        taken += await anext(reader)
    await anext(reader)  # and the frames before are marked sent: they may go
    assert run.first_seq > 1
    assert [frame async for frame in run.frames(after=0)] == []  # it replaced the reader
    warnings = [line["message"] for line in lines_of(json_log) if line["level"] == "WARNING"]
    assert warnings == ["Reader asked for frames no longer kept; ending its stream"]
    await reader.aclose()
    await run.close()
