"""One streamed session: the pipeline runs in its own task; readers stream its frames.

The pipeline runs as a task rather than inside a response generator, so a session can
outlive the connection that started it: every event is numbered (its SSE ``id``) and kept
in a bounded replay buffer, and a client that lost its connection comes back with
``Last-Event-ID`` and reads on from where it was, on a new request, without a second
analysis.

Lifecycle (:class:`SessionState`), with one owner for every exit:

* the request that opened the session starts the task and, once its own stream has
  ended, *lingers* (:meth:`linger`) until the session is settled;
* the session is settled when a reader has been sent the terminal event, or when nobody
  has been reading for ``resume_window_s`` (or nobody can any more: *abandoned*): the
  pipeline is then cancelled (or its finished result dropped) and the request is counted
  ``cancelled``, once;
* :meth:`shut_down` (the instance is draining) ends a running pipeline with a
  ``SHUTTING_DOWN`` error event, or drops a session nobody is reading.

The opening request's server span stays open while it lingers, so the session's trace
has one root for the whole session, and a reconnect's server span joins it as a child.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Final, Literal, Protocol

import anyio

from app.pipeline.event_ids import event_id
from app.pipeline.events import (
    CompleteEvent,
    ErrorEvent,
    Event,
    PipelineError,
    SessionEvent,
    StreamErrorCode,
    bounded_frame,
)
from app.pipeline.mirror import SessionMirror
from app.pipeline.phases import EventSink
from app.pipeline.replay import ReplayBuffer
from app.store.redis_log import DELIVERED, SessionStore
from otel.facade import AnalysisRecord, CancelReason, Telemetry, TraceRef

log = logging.getLogger("fit_check.session")


class Pipeline(Protocol):
    """What a session runs (``FitCheckPipeline``): emits events, raises PipelineError."""

    async def run(self, query: str, emit: EventSink, *, include_thoughts: bool) -> None: ...


#: What ``FrameWriter.write_now`` did with a frame: ``written`` (the connection took it
#: without waiting), ``started`` (its send waits for the connection: the reader's task
#: finishes it with ``flush``), ``refused`` (nothing sent: the reader's task sends it).
WriteOutcome = Literal["written", "started", "refused"]


class FrameWriter(Protocol):
    """A reader's connection, which the session's own task may write a frame to (the SSE
    response, ``app.api.direct_send``)."""

    def write_now(self, frame: bytes) -> WriteOutcome:
        """Send ``frame`` as the next body frame from the caller's task, if nothing else is
        being sent; never waits."""
        ...

    async def flush(self) -> None:
        """Wait for a frame ``write_now`` started; raises when the connection does not take
        it within its send timeout."""
        ...


@dataclasses.dataclass(slots=True)
class _Reader:
    """The current reader of a session: how far it has been sent, and whether it waits
    for frames with nothing to send (``parked``: the next frame may then be written
    straight to its connection by the task that makes it)."""

    position: int
    writer: FrameWriter | None
    parked: bool = False
    #: Frames wait to be written straight at the end of this loop iteration.
    straight_due: bool = False
    #: A frame written straight waits for the connection: the reader's task finishes it.
    flush: bool = False


#: Whether a reconnect whose last event was ``seq`` can read on: ``gone`` (the session is
#: over, or the frames after ``seq`` were dropped), ``future`` (no such event was sent).
ResumeVerdict = Literal["ok", "gone", "future"]

#: How an ended session is told apart: the code of its ``error`` event, its message, and
#: the reason it is counted ``cancelled`` with.
_StopReason = tuple[StreamErrorCode, str, CancelReason]
_SHUTTING_DOWN: _StopReason = (
    "SHUTTING_DOWN",
    "The service is restarting; send it again",
    "shutdown",
)
_SLOW_READER: _StopReason = (
    "SLOW_READER",
    "The connection did not take the stream's events in time; the analysis was stopped",
    "slow_reader",
)


class SessionState(enum.Enum):
    """Where a session is in its life: one value, changed only along ``_NEXT``, so that a
    late event (a reader sent the terminal event after the owner gave up, a pipeline that
    ends after it was closed) cannot reopen what was settled.

    Whether anyone reads the session is not part of it: readers come and go while it runs
    and after it ended alike, and a session nobody reads is *lingering*
    (``SessionRun.lingering_since``) whatever its state.
    """

    #: Made, its task not started: there is nothing to read or to stop yet.
    OPENED = enum.auto()
    #: The pipeline runs, or is being stopped (``SessionRun._stop`` says with what).
    RUNNING = enum.auto()
    #: The terminal event is emitted; the task waits until a reader is sent it.
    ENDED = enum.auto()
    #: A reader was sent the terminal event: the task ends by itself, with its outcome, and
    #: nobody cancels it.
    DELIVERED = enum.auto()
    #: Nobody can read it any more: its owner closes it now, not at the end of its window.
    ABANDONED = enum.auto()
    #: Settled: its task is stopped or over and it has left the live set.
    CLOSED = enum.auto()


#: The states each state may move to; anything else is a bug (``SessionStateError``).
_NEXT: Final[Mapping[SessionState, frozenset[SessionState]]] = {
    SessionState.OPENED: frozenset({SessionState.RUNNING, SessionState.CLOSED}),
    SessionState.RUNNING: frozenset(
        {SessionState.ENDED, SessionState.ABANDONED, SessionState.CLOSED}
    ),
    SessionState.ENDED: frozenset(
        {SessionState.DELIVERED, SessionState.ABANDONED, SessionState.CLOSED}
    ),
    SessionState.DELIVERED: frozenset({SessionState.CLOSED}),
    SessionState.ABANDONED: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}

#: For the checks made for every frame: a module global is read at once, where an enum
#: member is looked up on its class each time.
_CLOSED: Final = SessionState.CLOSED


class SessionStateError(RuntimeError):
    """A transition ``_NEXT`` does not allow: the session's bookkeeping is wrong."""


class SessionRun:
    """Owns the pipeline task, the frames and the reader of one session."""

    def __init__(
        self,
        *,
        key: str,
        session_id: str,
        query: str,
        include_thoughts: bool,
        pipeline: Pipeline,
        telemetry: Telemetry,
        timeout_s: float,
        resume_window_s: float,
        replay_bytes: int,
        retry_ms: int,
        on_closed: Callable[[SessionRun], None],
        close_timeout_s: float = 5.0,
        send_buffer_bytes: int = 262_144,
        slow_reader_s: float = 30.0,
        client: str = "",
        store: SessionStore | None = None,
        capped: bool = False,
    ) -> None:
        self.key = key
        self.session_id = session_id
        #: The address the session was opened from (the per-client limit counts it).
        self.client = client
        #: Reconnects served so far (``FIT_CHECK_MAX_RECONNECTS`` bounds them).
        self.reconnects = 0
        #: The opening request's trace (known once started); a reconnect's span joins it.
        self.trace: TraceRef | None = None
        self.opened_at = time.monotonic()
        self._query = query
        self._include_thoughts = include_thoughts
        self._pipeline = pipeline
        self._telemetry = telemetry
        self._timeout_s = timeout_s
        self._resume_window_s = resume_window_s
        self._retry_frame = b"retry: %d\r\n\r\n" % retry_ms
        self._on_closed = on_closed
        self._close_timeout_s = close_timeout_s
        self._send_buffer_bytes = send_buffer_bytes
        self._slow_reader_s = slow_reader_s
        self._buffer = ReplayBuffer(replay_bytes)
        self._state = SessionState.OPENED
        self._new_frames = asyncio.Event()  # a frame was added, or the reader was replaced
        # The state changed, a reader came or went, or the task ended: what the owner (and
        # the task, for its delivery) waits on.
        self._changed = asyncio.Event()
        self._progress = asyncio.Event()  # the reader was sent frames, or came or went
        # Who reads is the readers' side, not the lifecycle: it changes with every
        # connection, in any state.
        self._reader: _Reader | None = None
        #: A reader on another replica (the shared store's mirror reports it).
        self._remote_reader = False
        self._reader_left_at: float | None = None
        #: A client has an id to come back with (only then is there a window to wait).
        self._sent_any = False
        self._mirror = None if store is None else SessionMirror(store, self, capped=capped)
        self._terminal_seq: int | None = None
        self._first_phase_seq: int | None = None
        #: Why the task was told to end with an error event; read by the task when the
        #: cancellation lands, whatever the state is by then.
        self._stop: _StopReason | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._analysis: AnalysisRecord | None = None

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        return self._state

    def _enter(self, state: SessionState) -> None:
        """Move to ``state``, waking whoever waits on the lifecycle. An unlisted transition
        raises: it would let two owners end the session, or none."""
        if state not in _NEXT[self._state]:
            raise SessionStateError(f"a session cannot go from {self._state.name} to {state.name}")
        self._state = state
        self._changed.set()

    def start(self) -> None:
        """Start the pipeline task in the caller's context (it inherits the request span)."""
        if self._state is SessionState.OPENED:
            self._enter(SessionState.RUNNING)
            self.trace = self._telemetry.current_trace()
            self._task = asyncio.create_task(self._run(), name=f"fit-check {self.session_id}")
            self._task.add_done_callback(lambda _task: self._changed.set())
            if self._mirror is not None:
                self._mirror.start()

    @property
    def finished(self) -> bool:
        """Settled, or about to be: nothing more can be read from it."""
        return self._state is _CLOSED or (self._task is not None and self._task.done())

    @property
    def ended(self) -> bool:
        """The terminal event is emitted (it may not be delivered yet)."""
        return self._terminal_seq is not None

    @property
    def held_bytes(self) -> int:
        """Bytes of frames held: at most the replay allowance, plus the send allowance,
        plus one frame."""
        return self._buffer.size

    @property
    def lingering_since(self) -> float | None:
        """When its last reader left (``time.monotonic``), while nobody reads a session
        that was read: it then only waits for its client to come back."""
        if self._has_reader or not self._sent_any or self.finished:
            return None
        return self._reader_left_at

    def resume_verdict(self, seq: int) -> ResumeVerdict:
        """Whether a client whose last event was ``seq`` can read on from here."""
        if self.finished or (self._terminal_seq is not None and seq >= self._terminal_seq):
            return "gone"
        if seq >= self._buffer.next_seq:
            return "future"
        return "ok" if self._buffer.holds(seq + 1) else "gone"

    def can_resume_after(self, seq: int) -> bool:
        return self.resume_verdict(seq) == "ok"

    async def linger(self) -> None:
        """Wait until the session is settled, then close it. Called by the opening request
        once its own stream has ended, however it ended."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            while (
                self._task is not None
                and not self._task.done()
                and self._state is not SessionState.ABANDONED
            ):
                remaining: float | None = None
                # A reader that got the terminal event leaves a task about to end by itself
                # (with its outcome): wait for that, never cancel it.
                if not self._has_reader and self._state is not SessionState.DELIVERED:
                    if not self._sent_any:
                        break  # the client never got an id: nobody can come back for it
                    if deadline is None:
                        deadline = loop.time() + self._resume_window_s
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        log.info("Nobody came back for the session; dropping it")
                        break
                else:
                    deadline = None
                self._changed.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
                except TimeoutError:
                    pass
        finally:
            await self.close()

    def abandon(self) -> None:
        """Nobody can read this session any more (its client asked for frames already
        dropped, or lingering sessions are over their allowance): it ends now instead of
        at the end of its resume window. One whose reader was sent the terminal event is
        left to end by itself, with its outcome."""
        if not self._has_reader and SessionState.ABANDONED in _NEXT[self._state]:
            self._enter(SessionState.ABANDONED)

    def shut_down(self) -> None:
        """The instance is draining: a running pipeline ends with ``SHUTTING_DOWN`` (sent to
        a reader if there is one); a session nobody reads is cancelled at once."""
        task = self._task
        if task is None or task.done():
            return
        if not self._has_reader:
            self._cancel(task, "shutdown")
        elif self._terminal_seq is None:
            self._stop = _SHUTTING_DOWN
            task.cancel()

    def reader_stalled(self) -> None:
        """The reader's connection stopped taking frames (a send timed out): if nobody
        comes back, the session is counted as ended by a slow reader."""
        analysis = self._analysis
        if analysis is not None and analysis.cancel_reason is None:
            analysis.cancel_reason = "slow_reader"

    async def close(self) -> None:
        """Stop the task if it still runs, wait for it (bounded), leave the live set."""
        if self._state is _CLOSED:
            return
        self._enter(_CLOSED)
        try:
            task = self._task
            if task is not None and not task.done():
                self._cancel(task, "client_gone")
                await self._wait_task(task)
            if self._mirror is not None:
                with anyio.CancelScope(shield=True):
                    await self._mirror.close(self._close_timeout_s)
        finally:
            self._new_frames.set()  # a reader still waiting ends its stream
            self._on_closed(self)

    async def _wait_task(self, task: asyncio.Task[None]) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout_s):
            await asyncio.wait({task})
        if not task.done():
            log.error("Session task did not stop within %ss", self._close_timeout_s)

    def _cancel(self, task: asyncio.Task[None], reason: CancelReason) -> None:
        analysis = self._analysis
        if analysis is not None:
            analysis.cancel_reason = analysis.cancel_reason or reason
            if analysis.stream_ended is None:
                analysis.stream_ended = time.perf_counter()
        task.cancel()

    # --- the shared store's side (``MirroredSession``) ------------------------------------
    @property
    def _has_reader(self) -> bool:
        return self._reader is not None or self._remote_reader

    @property
    def traceparent(self) -> str | None:
        return None if self.trace is None else self.trace.traceparent

    @property
    def terminal_seq(self) -> int | None:
        return self._terminal_seq

    @property
    def first_seq(self) -> int:
        return self._buffer.first_seq

    @property
    def streaming(self) -> bool:
        """Spending or about to: not lingering, not over (the cap across replicas counts
        these)."""
        return not self.finished and self.lingering_since is None

    def frames_from(self, seq: int) -> list[bytes] | None:
        return self._buffer.since(seq)

    def remote_reader(self, state: str | None) -> None:
        """What the store says of a reader on another replica: none (``None``), read up to
        a sequence number, or sent the terminal event (``delivered``)."""
        if state == DELIVERED:
            # Said again at every renewal; and it settles only a session waiting for it.
            if self._state is SessionState.ENDED:
                self._enter(SessionState.DELIVERED)
            return
        reading = state is not None and state.isdigit()
        if reading and state is not None:
            self._sent_any = True
            if self._reader is None:
                self._buffer.sent_through(int(state))
            self._progress.set()
        if reading != self._remote_reader:
            self._remote_reader = reading
            if not reading and self._reader is None:
                self._reader_left_at = time.monotonic()
            self._changed.set()
            self._progress.set()

    # --- backpressure (the pipeline's side of ``EventSink``) ---------------------------
    @property
    def congested(self) -> bool:
        """More frames wait for the reader than the send allowance holds."""
        return self._buffer.unsent_bytes > self._send_buffer_bytes

    async def wait_for_room(self) -> None:
        """Return once the reader has taken enough frames. With nobody reading, wait for a
        reader (the resume window ends the wait); a reader that takes nothing for
        ``slow_reader_s`` ends the session with ``SLOW_READER``."""
        while self.congested:
            self._progress.clear()
            stall = self._slow_reader_s if self._has_reader else None
            try:
                async with asyncio.timeout(stall):
                    await self._progress.wait()
            except TimeoutError:
                log.warning("Reader took no frames for %ss; stopping the session", stall)
                await self._stop_self(_SLOW_READER)

    async def wait_for_reader(self) -> None:
        """Before work that costs money: a session whose client left (and may come back)
        spends nothing more until it does; the resume window ends the wait."""
        while not self._has_reader and self._sent_any:
            self._progress.clear()
            await self._progress.wait()

    async def _stop_self(self, reason: _StopReason) -> None:
        """End the pipeline from inside its own task, as ``shut_down`` does from outside."""
        task = asyncio.current_task()
        if task is None or self._task is not task:
            raise RuntimeError("only the session's own task stops itself")
        self._stop = reason
        task.cancel()
        await asyncio.sleep(0)  # the cancellation lands here

    # --- reading -------------------------------------------------------------------------
    async def frames(
        self, after: int | None = None, writer: FrameWriter | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The SSE frames after event ``after`` (all of them when None), up to and including
        the terminal event. A new reader replaces the current one, whose stream then ends.

        Whatever is buffered by the time the client is ready goes out as one write: a fast
        phase produces a dozen events at once, and one send instead of a dozen saves the
        server (and every layer of ASGI middleware) most of its per-event work. Events are
        never held back waiting for more.

        With a ``writer`` (the reader's connection), the frames made while this reader
        waits with nothing to send are written straight to the connection at the end of
        the loop iteration that made them (``__call__``, ``_write_straight``): a streamed
        report's chunks then cost no wake-up of this generator's task, no pass through it
        and the SSE response's loop, and events made at once still go out as one write.
        This generator then only sends what the writer could not take, the first frame
        (with the ``retry`` field) and the terminal one, and finishes a straight write that
        had to wait for the connection (``writer.flush``, bounded by the send timeout).
        """
        reader = _Reader(0 if after is None else after + 1, writer)
        self._reader = reader
        self._reader_left_at = None
        self._new_frames.set()  # wake the reader this one replaces
        self._changed.set()
        self._progress.set()
        buffer = self._buffer
        buffer.sent_through(reader.position)  # what this reader has not had is kept for it
        prefix = self._retry_frame
        try:
            while self._reader is reader and self._state is not _CLOSED:
                if reader.flush and writer is not None:
                    reader.flush = False
                    await writer.flush()
                    if self._reader is reader:
                        buffer.sent_through(reader.position)
                        self._progress.set()
                    continue
                batch = buffer.since(reader.position)
                if batch is None:
                    # Only a reconnect can ask for frames already gone (they were dropped
                    # between its check and now); the live reader's frames are kept.
                    log.warning("Reader asked for frames no longer kept; ending its stream")
                    return
                if not batch:
                    self._new_frames.clear()
                    # Straight writes only once the first frame (and its `retry`) went out.
                    reader.parked = writer is not None and not prefix
                    try:
                        await self._new_frames.wait()
                    finally:
                        reader.parked = False
                    continue
                position = reader.position = reader.position + len(batch)
                self._note_sent(position)
                yield prefix + b"".join(batch)
                prefix = b""
                if self._reader is reader:
                    buffer.sent_through(position)
                    self._progress.set()
                if self._terminal_seq is not None and position > self._terminal_seq:
                    # Unless the owner settled it meanwhile (abandoned, closed): then the
                    # owner ends the task.
                    if self._state is SessionState.ENDED:
                        self._enter(SessionState.DELIVERED)
                    # The request's span ends with the stream's last frame: let the task
                    # record the outcome on it first.
                    if self._task is not None and not self._task.done():
                        await self._wait_task(self._task)
                    return
        finally:
            if self._reader is reader:
                self._reader = None
                self._reader_left_at = time.monotonic()
                if self._analysis is not None:
                    self._analysis.stream_ended = time.perf_counter()
                self._changed.set()
                self._progress.set()

    def _note_sent(self, position: int) -> None:
        self._sent_any = True
        if self._analysis is not None:
            self._analysis.stream_ended = None
            first_phase = self._first_phase_seq
            if first_phase is not None and position > first_phase:
                self._telemetry.first_event(self._analysis)

    def _trace_id(self) -> str | None:
        return None if self.trace is None else self.trace.trace_id

    # --- the pipeline task ----------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Emit ``event``: the pipeline's side of ``EventSink``. Encoded once, kept in the
        replay buffer, and written straight to a reader that waits with nothing to send
        (``frames``), or left for the reader's task."""
        buffer = self._buffer
        seq = buffer.next_seq
        terminal = event.terminal
        buffer.append(bounded_frame(event, event_id(self.key, seq, terminal=terminal)))
        if terminal:
            self._terminal_seq = seq
            # A session abandoned or closed while its pipeline finished stays so.
            if self._state is SessionState.RUNNING:
                self._enter(SessionState.ENDED)
        elif self._first_phase_seq is None and event.type == "phase":
            self._first_phase_seq = seq
        reader = self._reader
        if reader is None or not reader.parked or terminal:
            # The terminal frame always goes through the reader: it settles the session.
            self._new_frames.set()
        elif not reader.straight_due:
            # At the end of this loop iteration, with whatever else is made in it: a phase
            # makes a dozen events at once, and they go out as one write, as the reader
            # would send them; a streamed chunk arrives alone and goes out alone.
            reader.straight_due = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._write_straight, reader)
        if self._mirror is not None:
            self._mirror.wake()

    def _write_straight(self, reader: _Reader) -> None:
        """The frames made for a parked reader, straight to its connection, from a loop
        callback: no wake-up of the reader's task. The reader's task is woken instead when
        it has to act: the terminal frame, a write refused, or one that has to wait."""
        reader.straight_due = False
        if self._reader is not reader or not reader.parked or self._state is _CLOSED:
            return  # gone, or awake: the reader sends what there is
        try:
            batch = self._buffer.since(reader.position)
            if not batch:
                return
            position = reader.position + len(batch)
            writer = reader.writer
            if writer is None or (self._terminal_seq is not None and position > self._terminal_seq):
                self._new_frames.set()
                return
            outcome = writer.write_now(batch[0] if len(batch) == 1 else b"".join(batch))
            if outcome == "refused":
                self._new_frames.set()
                return
            reader.position = position
            self._note_sent(position)
            if outcome == "written":
                self._buffer.sent_through(position)
                self._progress.set()
                return
            reader.flush = True  # started: the send waits for the connection
            self._new_frames.set()
        except Exception:  # pragma: no cover - a bug here must not strand the reader
            log.exception("Writing frames straight to the reader failed")
            self._new_frames.set()

    async def _run(self) -> None:
        started = time.perf_counter()
        with self._telemetry.analysis(self.session_id, query_length=len(self._query)) as analysis:
            self._analysis = analysis
            self(
                Event(
                    "session", SessionEvent(session_id=self.session_id, trace_id=self._trace_id())
                )
            )
            terminal = await self._pipeline_outcome(analysis)
            if terminal is None:
                terminal = Event(
                    "complete",
                    CompleteEvent(
                        duration_ms=int((time.perf_counter() - started) * 1000),
                        session_id=self.session_id,
                        trace_id=self._trace_id(),
                        cost_usd=round(analysis.cost.cost_usd, 6),
                        unpriced_calls=analysis.cost.unpriced_calls,
                    ),
                )
            self(terminal)
            # Settled once a reader got it; if nobody does, the owner cancels this wait
            # when the resume window ends, and the request counts as cancelled.
            while self._state is not SessionState.DELIVERED:
                self._changed.clear()
                await self._changed.wait()

    async def _pipeline_outcome(self, analysis: AnalysisRecord) -> Event | None:
        """Run the pipeline; None on success, else the ``error`` event to send."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._pipeline.run(self._query, self, include_thoughts=self._include_thoughts)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            stop = self._stop
            if stop is None or task is None:
                raise
            task.uncancel()
            code, message, reason = stop
            analysis.outcome = "cancelled"
            analysis.cancel_reason = reason
            if reason == "shutdown":
                log.warning("Request stopped: the instance is shutting down")
            return _error(code, message)
        except TimeoutError:
            analysis.outcome = "timeout"
            log.warning("Request timed out", extra={"timeout_s": self._timeout_s})
            return _error("TIMEOUT", f"The analysis took longer than {self._timeout_s:g}s")
        except PipelineError as exc:
            analysis.outcome = "error"
            # Code and message in the line itself: a text log shows no extras. The message
            # is our own words (PipelineError never carries a provider's text).
            log.warning("Request failed: %s: %s", exc.code, exc.message, extra={"code": exc.code})
            return _error(exc.code, exc.message)
        except Exception:
            analysis.outcome = "error"
            log.exception("Pipeline crashed")
            return _error("AGENT_ERROR", "The analysis failed unexpectedly")
        return None


def _error(code: StreamErrorCode, message: str) -> Event:
    return Event("error", ErrorEvent(code=code, message=message))
