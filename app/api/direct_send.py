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
"""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The server's own ``send``, put in the scope by the outermost middleware.
SERVER_SEND = "fit_check.server_send"


class ServerSendInScope:
    """The outermost middleware: keeps the server's ``send`` in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Put ``ServerSendInScope`` outside every middleware the app has, telemetry's too.
    Call it last: a later ``build_middleware_stack`` wrapper would sit outside it."""
    build_stack = app.build_middleware_stack

    def stack() -> ASGIApp:
        return ServerSendInScope(build_stack())

    # [method-assign]: Starlette's only hook outside every middleware it builds.
    app.build_middleware_stack = stack  # type: ignore[method-assign]


def body_frames_direct(scope: Scope, send: Send) -> Send:
    """``send`` for a streaming response: a body frame with more to follow goes to the
    server directly; the start and the last frame go down the middleware stack.

    Without ``ServerSendInScope`` in front (an app built without ``install``), ``send``."""
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
