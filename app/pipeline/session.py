"""One streamed session: the pipeline runs in its own task; readers stream its frames.

The pipeline runs as a task rather than inside a response generator, so a session can
outlive the connection that started it: every event is numbered (its SSE ``id``) and kept
in a bounded replay buffer, and a client that lost its connection comes back with
``Last-Event-ID`` and reads on from where it was, on a new request, without a second
analysis.

Lifecycle, with one owner for every exit:

* the request that opened the session starts the task and, once its own stream has
  ended, *lingers* (:meth:`linger`) until the session is settled;
* the session is settled when a reader has been sent the terminal event, or when nobody
  has been reading for ``resume_window_s``: the pipeline is then cancelled (or its
  finished result dropped) and the request is counted ``cancelled``, once;
* :meth:`shut_down` (the instance is draining) ends a running pipeline with a
  ``SHUTTING_DOWN`` error event, or drops a session nobody is reading.

The opening request's server span stays open while it lingers, so the session's trace
has one root for the whole session, and a reconnect's server span joins it as a child.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import anyio

from app.pipeline.event_ids import event_id
from app.pipeline.events import (
    CompleteEvent,
    ErrorEvent,
    Event,
    PipelineError,
    SessionEvent,
    StreamErrorCode,
)
from app.pipeline.phases import Emit
from app.pipeline.replay import ReplayBuffer
from otel.facade import CancelReason, RequestScope, Telemetry, TraceRef

log = logging.getLogger("fit_check.session")


class Pipeline(Protocol):
    """What a session runs (``FitCheckPipeline``): emits events, raises PipelineError."""

    async def run(self, query: str, emit: Emit, *, include_thoughts: bool) -> None: ...


class SessionRun:
    """Owns the pipeline task, the replay buffer and the reader of one session."""

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
    ) -> None:
        self.key = key
        self.session_id = session_id
        #: The opening request's trace (known once started); a reconnect's span joins it.
        self.trace: TraceRef | None = None
        self._query = query
        self._include_thoughts = include_thoughts
        self._pipeline = pipeline
        self._telemetry = telemetry
        self._timeout_s = timeout_s
        self._resume_window_s = resume_window_s
        self._retry_frame = b"retry: %d\r\n\r\n" % retry_ms
        self._on_closed = on_closed
        self._close_timeout_s = close_timeout_s
        self._buffer = ReplayBuffer(replay_bytes)
        self._new_frames = asyncio.Event()  # a frame was added, or the reader was replaced
        self._changed = asyncio.Event()  # a reader came or went, or the task ended
        self._delivered = asyncio.Event()  # a reader was sent the terminal event
        self._reader: object | None = None
        self._sent_any = False
        self._terminal_seq: int | None = None
        self._first_phase_seq: int | None = None
        self._stopping = False
        self._abandoned = False
        self._task: asyncio.Task[None] | None = None
        self._scope: RequestScope | None = None
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the pipeline task in the caller's context (it inherits the request span)."""
        if self._task is None:
            self.trace = self._telemetry.current_trace()
            self._task = asyncio.create_task(self._run(), name=f"fit-check {self.session_id}")
            self._task.add_done_callback(lambda _task: self._changed.set())

    @property
    def finished(self) -> bool:
        """Settled, or about to be: nothing more can be read from it."""
        return self._closed or (self._task is not None and self._task.done())

    def can_resume_after(self, seq: int) -> bool:
        """Whether a client whose last event was ``seq`` can read on from here."""
        if self.finished or (self._terminal_seq is not None and seq >= self._terminal_seq):
            return False
        return self._buffer.holds(seq + 1)  # also: no id from the future

    async def linger(self) -> None:
        """Wait until the session is settled, then close it. Called by the opening request
        once its own stream has ended, however it ended."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            while self._task is not None and not self._task.done() and not self._abandoned:
                remaining: float | None = None
                # A reader that got the terminal event leaves a task about to end by itself
                # (with its outcome): wait for that, never cancel it.
                if self._reader is None and not self._delivered.is_set():
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
        """Its client asked for frames the replay buffer no longer holds: nobody can read
        this session any more, so it ends now instead of at the end of its window."""
        if self._reader is None:
            self._abandoned = True
            self._changed.set()

    def shut_down(self) -> None:
        """The instance is draining: a running pipeline ends with ``SHUTTING_DOWN`` (sent to
        a reader if there is one); a session nobody reads is cancelled at once."""
        task = self._task
        if task is None or task.done():
            return
        if self._reader is None:
            self._cancel(task, "shutdown")
        elif self._terminal_seq is None:
            self._stopping = True
            task.cancel()

    async def close(self) -> None:
        """Stop the task if it still runs, wait for it (bounded), leave the live set."""
        if self._closed:
            return
        self._closed = True
        try:
            task = self._task
            if task is not None and not task.done():
                self._cancel(task, "client_gone")
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout_s):
                    await asyncio.wait({task})
                if not task.done():
                    log.error("Session task did not stop within %ss", self._close_timeout_s)
        finally:
            self._new_frames.set()  # a reader still waiting ends its stream
            self._on_closed(self)

    def _cancel(self, task: asyncio.Task[None], reason: CancelReason) -> None:
        scope = self._scope
        if scope is not None:
            scope.cancel_reason = scope.cancel_reason or reason
            if scope.stream_ended is None:
                scope.stream_ended = time.perf_counter()
        task.cancel()

    # --- reading -------------------------------------------------------------------------
    async def frames(self, after: int | None = None) -> AsyncGenerator[bytes, None]:
        """The SSE frames after event ``after`` (all of them when None), up to and including
        the terminal event. A new reader replaces the current one, whose stream then ends.

        Whatever is buffered by the time the client is ready goes out as one write: a fast
        phase produces a dozen events at once, and one send instead of a dozen saves the
        server (and every layer of ASGI middleware) most of its per-event work. Events are
        never held back waiting for more.
        """
        token = object()
        self._reader = token
        self._new_frames.set()  # wake the reader this one replaces
        self._changed.set()
        position = 0 if after is None else after + 1
        prefix = self._retry_frame
        try:
            while self._reader is token and not self._closed:
                batch = self._buffer.since(position)
                if batch is None:
                    log.warning("Reader fell behind the replay buffer; ending its stream")
                    return
                if not batch:
                    self._new_frames.clear()
                    await self._new_frames.wait()
                    continue
                position += len(batch)
                self._note_sent(position)
                yield prefix + b"".join(batch)
                prefix = b""
                if self._terminal_seq is not None and position > self._terminal_seq:
                    self._delivered.set()
                    return
        finally:
            if self._reader is token:
                self._reader = None
                if self._scope is not None:
                    self._scope.stream_ended = time.perf_counter()
                self._changed.set()

    def _note_sent(self, position: int) -> None:
        self._sent_any = True
        if self._scope is not None:
            self._scope.stream_ended = None
            first_phase = self._first_phase_seq
            if first_phase is not None and position > first_phase:
                self._telemetry.first_event(self._scope)

    def _trace_id(self) -> str | None:
        return None if self.trace is None else self.trace.trace_id

    # --- the pipeline task ----------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        seq = self._buffer.next_seq
        terminal = event.terminal
        self._buffer.append(event.encode(event_id(self.key, seq, terminal=terminal)))
        if terminal:
            self._terminal_seq = seq
        elif self._first_phase_seq is None and event.type == "phase":
            self._first_phase_seq = seq
        self._new_frames.set()

    async def _run(self) -> None:
        started = time.perf_counter()
        with self._telemetry.request(self.session_id, query_length=len(self._query)) as scope:
            self._scope = scope
            self._emit(
                Event(
                    "session", SessionEvent(session_id=self.session_id, trace_id=self._trace_id())
                )
            )
            terminal = await self._pipeline_outcome(scope)
            if terminal is None:
                terminal = Event(
                    "complete",
                    CompleteEvent(
                        duration_ms=int((time.perf_counter() - started) * 1000),
                        session_id=self.session_id,
                        trace_id=self._trace_id(),
                    ),
                )
            self._emit(terminal)
            # Settled once a reader got it; if nobody does, the owner cancels this wait
            # when the resume window ends, and the request counts as cancelled.
            await self._delivered.wait()

    async def _pipeline_outcome(self, scope: RequestScope) -> Event | None:
        """Run the pipeline; None on success, else the ``error`` event to send."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._pipeline.run(
                    self._query, self._emit, include_thoughts=self._include_thoughts
                )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._stopping or task is None:
                raise
            task.uncancel()
            scope.outcome = "cancelled"
            scope.cancel_reason = "shutdown"
            log.warning("Request stopped: the instance is shutting down")
            return _error("SHUTTING_DOWN", "The service is restarting; send it again")
        except TimeoutError:
            scope.outcome = "timeout"
            log.warning("Request timed out", extra={"timeout_s": self._timeout_s})
            return _error("TIMEOUT", f"The analysis took longer than {self._timeout_s:g}s")
        except PipelineError as exc:
            scope.outcome = "error"
            log.warning("Request failed", extra={"code": exc.code})
            return _error(exc.code, exc.message)
        except Exception:
            scope.outcome = "error"
            log.exception("Pipeline crashed")
            return _error("AGENT_ERROR", "The analysis failed unexpectedly")
        return None


def _error(code: StreamErrorCode, message: str) -> Event:
    return Event("error", ErrorEvent(code=code, message=message))
