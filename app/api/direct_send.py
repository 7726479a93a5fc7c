"""SSE body frames go straight to the server, past the middleware stack.

Every middleware that wraps ``send`` (Starlette's error and exception middlewares, CORS,
the body-size cap, OpenTelemetry's server-span middleware) runs once per ``send``, and an
SSE response sends once per write: a streamed LLM answer writes once for each chunk that
arrives alone. None of them does anything with a body frame in the middle of a response:
they act on the response's start (status, headers) and its last frame (the server span
ends there). So the SSE response sends its start and its last frame down the stack as
usual and the frames between straight to the server: no middleware, telemetry's
included, costs anything per write (docs/performance.md, "SSE writes past the middleware
stack").

A middleware added later that must see every body frame (a compressor, a byte counter)
would be bypassed for SSE: such a middleware has no business on an event stream anyway
(compression holds events back until a block fills).

The session's response (``DirectEventSourceResponse``) also makes each write cheaper: no
cancel scope for a send that does not wait, and a streamed chunk written by the task that
made it while the response has nothing else to send (docs/performance.md, "Relaying a
chunk").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from types import CoroutineType
from typing import Any, NamedTuple, cast

import anyio
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.pipeline.session import WriteOutcome

#: The server's own ``send``, put in the scope by the outermost middleware.
SERVER_SEND = "fit_check.server_send"


class ServerSendInScope:
    """The outermost middleware: keeps the server's ``send`` in the scope. The composition
    root puts it outside every other one, telemetry's too (``app.asgi.asgi_stack``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


def body_frames_direct(scope: Scope, send: Send) -> Send:
    """``send`` for a streaming response: a body frame with more to follow goes to the
    server directly; the start and the last frame go down the middleware stack.

    Without ``ServerSendInScope`` in front (an app built without it), ``send``."""
    server_send: Send | None = scope.get(SERVER_SEND)
    if server_send is None:
        return send

    # Not a coroutine function: it hands back the chosen send's awaitable, one frame less
    # on every write.
    def route(message: Message) -> Awaitable[None]:
        if message.get("more_body"):
            return server_send(message)
        return send(message)

    return route


# --- the SSE response's per-write path ------------------------------------------------


class _Started(NamedTuple):
    """A send run up to its first wait: the coroutine, and what it waits on."""

    coroutine: Coroutine[Any, Any, None]
    waiting_on: Any


def start_send(send: Send, message: Message) -> _Started | None:
    """Run ``send(message)`` in the caller's task until it completes or has to wait. None
    when it completed: a server's send waits only while its write buffer is full (a client
    that is not reading), so nearly every send completes here, with no cancel scope, timer
    or task switch. Else what ``finish_send`` takes to run it to its end.

    This is how Python 3.12's eager tasks start a coroutine: ``send(None)`` runs it until
    it yields the future it waits on (or None, a bare yield)."""
    awaitable = send(message)
    coroutine = (
        cast(Coroutine[Any, Any, None], awaitable)
        if type(awaitable) is CoroutineType
        else _awaiting(awaitable)  # any other awaitable: stepped through a coroutine
    )
    try:
        waiting_on = coroutine.send(None)
    except StopIteration:
        return None
    return _Started(coroutine, waiting_on)


async def _awaiting(awaitable: Awaitable[None]) -> None:
    await awaitable


async def finish_send(started: _Started) -> None:
    """Run a started send to its end in this task, as the task that started it would
    have: wait for what it waits on, then step it again. A cancellation (the send timeout,
    the response ending) is thrown into the send where it waits, as it would have been."""
    coroutine, waiting_on = started
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                # What a task does with the future a coroutine yields: take it over (the
                # flag says a coroutine waits on it; awaiting it with the flag set is an
                # error), then wait for it.
                if getattr(waiting_on, "_asyncio_future_blocking", False):
                    waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coroutine.send(None)
        except StopIteration:
            return


class DirectEventSourceResponse(EventSourceResponse):
    """sse-starlette's ``EventSourceResponse`` with a cheaper write.

    * No cancel scope per send. sse-starlette enters ``anyio.move_on_after(send_timeout)``
      around every send; here a send is started at once (``start_send``) and only one that
      has to wait (the client stopped reading, so the server's buffer is full) gets the
      send timeout's scope: the slow reader is still cut after ``send_timeout``
      (``FIT_CHECK_SLOW_READER_S``), and a send that does not wait cannot be slow.
    * ``write_now`` (a ``FrameWriter`` for ``SessionRun.frames``): the session's task
      writes a frame straight to the connection while the response's own task waits for
      frames with nothing to send, with no hand-over between the tasks. A straight write
      that has to wait is finished by the response's task (``flush``), under the send
      timeout, before anything else is sent.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._send: Send | None = None
        #: A straight write that waits for the connection (or failed).
        self._in_flight: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Straight writes only to the server's own send (``body_frames_direct``): they may
        # run outside any task (a loop callback), where a middleware's send may not.
        self._send = send if scope.get(SERVER_SEND) is not None else None
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._send = None
            in_flight, self._in_flight = self._in_flight, None
            if in_flight is not None:
                if in_flight.done():
                    if not in_flight.cancelled():
                        in_flight.exception()  # seen: its error already ended the response
                else:
                    in_flight.cancel()

    def write_now(self, frame: bytes) -> WriteOutcome:
        send = self._send
        if (
            send is None
            or self._in_flight is not None
            or not self._response_started
            or self._response_complete
            or self._send_interrupted
            or not self.active
        ):
            return "refused"
        try:
            message = {"type": "http.response.body", "body": frame, "more_body": True}
            started = start_send(send, message)
        except Exception as exc:
            # Raised in the response's task by ``flush``, as its own send would have.
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            self._in_flight = failed
            return "started"
        if started is None:
            return "written"
        self._in_flight = asyncio.ensure_future(finish_send(started))
        return "started"

    async def flush(self) -> None:
        in_flight = self._in_flight
        if in_flight is None:
            return
        try:
            with anyio.move_on_after(self.send_timeout) as timer:
                # Shielded: a waiter that is cancelled (a ping's) does not cancel the send.
                await asyncio.shield(in_flight)
        except BaseException:
            self._send_interrupted = True
            in_flight.cancel()
            raise
        if timer.cancel_called:
            self._send_interrupted = True
            in_flight.cancel()
            raise SendTimeoutError()
        if self._in_flight is in_flight:
            self._in_flight = None

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        """sse-starlette's send with its timeout, the scope entered only by a send that
        waits; a straight write still waiting goes first."""
        if self._in_flight is not None:
            await self.flush()
        try:
            started = start_send(send, message)
            if started is None:
                return
            with anyio.move_on_after(self.send_timeout) as timer:
                await finish_send(started)
        except BaseException:
            self._send_interrupted = True
            raise
        if timer.cancel_called:
            self._send_interrupted = True
            raise SendTimeoutError()
