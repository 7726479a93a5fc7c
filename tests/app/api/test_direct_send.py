"""SSE body frames skip the middleware stack; the start and the last frame do not."""

from __future__ import annotations

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.direct_send import ServerSendInScope, body_frames_direct
from otel.instrumentation import IncomingTraceGate
from tests.helpers import HarnessFactory, attrs, parse_sse

QUERY = {"query": "Senior Python engineer, FastAPI, Kubernetes"}


class Recorder:
    """Records each message sent through it: as the server (outermost) or as a middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sent: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recording(message: Message) -> None:
            self.sent.append(message)
            await send(message)

        await self.app(scope, receive, recording)


async def test_only_the_start_and_the_last_frame_go_through_the_middlewares(
    harness_factory: HarnessFactory,
) -> None:
    harness = harness_factory()
    middlewares: list[Recorder] = []

    def probe(app: ASGIApp) -> Recorder:
        middlewares.append(Recorder(app))
        return middlewares[-1]

    harness.app.add_middleware(probe)
    server = Recorder(harness.app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=server), base_url="http://t"
    ) as client:
        response = await client.post(
            "/api/fit-check/stream", json=QUERY, headers={"Origin": "http://localhost:3003"}
        )

    # The middlewares still act on the start: CORS here.
    assert response.headers["access-control-allow-origin"] == "http://localhost:3003"
    events = parse_sse(response.text)
    assert [name for name, _ in events][-1] == "complete"
    frames = [m for m in server.sent if m["type"] == "http.response.body"]
    assert len(frames) > 2 and frames[-1].get("more_body", False) is False
    (middleware,) = middlewares
    assert [(m["type"], m.get("more_body", False)) for m in middleware.sent] == [
        ("http.response.start", False),
        ("http.response.body", False),
    ]
    # The server span still saw the status and ended with the response.
    (server_span,) = [s for s in harness.telemetry.finished_spans() if s.name.startswith("POST ")]
    assert attrs(server_span)["http.response.status_code"] == 200
    assert server_span.end_time is not None


async def test_the_server_send_is_kept_outside_telemetry_too(
    harness_factory: HarnessFactory,
) -> None:
    harness = harness_factory()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=harness.app), base_url="http://t"
    ) as client:
        assert (await client.get("/health")).status_code == 200
    outermost = harness.app.middleware_stack
    assert isinstance(outermost, ServerSendInScope)
    assert isinstance(outermost.app, IncomingTraceGate)


async def test_without_the_server_send_in_scope_everything_goes_down_the_stack() -> None:
    async def send(_message: Message) -> None:
        return None

    assert body_frames_direct({"type": "http"}, send) is send
