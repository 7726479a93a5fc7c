"""One streamed session: the pipeline runs in its own task and the stream reads its events.

Running the pipeline as a task, rather than inside the response generator, gives every
exit one owner: a timeout ends it with a ``TIMEOUT`` event, a disconnect cancels the task
and waits for it (bounded), and the slot is released exactly once whichever came first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import anyio

from app.pipeline.events import ErrorCode, Event, PipelineError
from app.pipeline.runner import FitCheckPipeline
from app.pipeline.sessions import Slot
from otel.facade import RequestScope, Telemetry

log = logging.getLogger("fit_check.session")
_END = Event("end", {})


class SessionRun:
    """Owns the pipeline task and the event queue of one session."""

    def __init__(
        self,
        *,
        session_id: str,
        query: str,
        include_thoughts: bool,
        pipeline: FitCheckPipeline,
        telemetry: Telemetry,
        slot: Slot,
        timeout_s: float,
        trace_id: str | None,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.session_id = session_id
        self._query = query
        self._include_thoughts = include_thoughts
        self._pipeline = pipeline
        self._telemetry = telemetry
        self._slot = slot
        self._timeout_s = timeout_s
        self._trace_id = trace_id
        self._close_timeout_s = close_timeout_s
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._scope: RequestScope | None = None

    def start(self) -> None:
        """Start the pipeline task in the caller's context (it inherits the request span)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"fit-check {self.session_id}")

    async def frames(self) -> AsyncIterator[bytes]:
        """The session's SSE frames, up to and including the terminal event.

        Whatever the pipeline has queued by the time the client is ready goes out as one
        write: a fast phase produces a dozen events at once, and one send instead of a
        dozen saves the server (and every layer of ASGI middleware) most of its per-event
        work. Events are never held back waiting for more.
        """
        while True:
            batch = [await self._queue.get()]
            while not batch[-1].terminal and batch[-1] is not _END and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            ended = batch[-1].terminal or batch[-1] is _END
            events = [event for event in batch if event is not _END]
            if self._scope is not None and any(e.type == "phase" for e in events):
                self._telemetry.first_event(self._scope)
            if events:
                yield b"".join(event.encode() for event in events)
            if ended:
                return

    async def close(self) -> None:
        """Stop the pipeline if it still runs, wait for it (bounded), free the slot."""
        try:
            task = self._task
            if task is not None and not task.done():
                task.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout_s):
                    await asyncio.wait({task})
                if not task.done():
                    log.error("Session task did not stop within %ss", self._close_timeout_s)
        finally:
            self._slot.release()

    def _emit(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def _run(self) -> None:
        started = time.perf_counter()
        try:
            with self._telemetry.request(self.session_id, query_length=len(self._query)) as scope:
                self._scope = scope
                self._emit(
                    Event("session", {"session_id": self.session_id, "trace_id": self._trace_id})
                )
                terminal = await self._pipeline_outcome(scope)
                if terminal is None:
                    terminal = Event(
                        "complete",
                        {
                            "duration_ms": int((time.perf_counter() - started) * 1000),
                            "session_id": self.session_id,
                            "trace_id": self._trace_id,
                        },
                    )
                self._emit(terminal)
        finally:
            self._emit(_END)

    async def _pipeline_outcome(self, scope: RequestScope) -> Event | None:
        """Run the pipeline; None on success, else the ``error`` event to send."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._pipeline.run(
                    self._query, self._emit, include_thoughts=self._include_thoughts
                )
        except TimeoutError:
            scope.outcome = "timeout"
            log.warning("Request timed out", extra={"timeout_s": self._timeout_s})
            return _error(ErrorCode.TIMEOUT, f"The analysis took longer than {self._timeout_s:g}s")
        except PipelineError as exc:
            scope.outcome = "error"
            log.warning("Request failed", extra={"code": exc.code.value})
            return _error(exc.code, exc.message)
        except Exception:
            scope.outcome = "error"
            log.exception("Pipeline crashed")
            return _error(ErrorCode.AGENT_ERROR, "The analysis failed unexpectedly")
        return None


def _error(code: ErrorCode, message: str) -> Event:
    return Event("error", {"code": code.value, "message": message})
