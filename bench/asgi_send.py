"""What the ASGI instrumentation's ``send`` wrapper costs an SSE response: ``python -m
bench.asgi_send``.

OpenTelemetry's ASGI middleware (under FastAPIInstrumentor) wraps ``send``; an SSE
response is one ``send`` per event. Here a trivial app sends N events through the
middleware (as the service configures it: no send/receive spans, no HTTP metrics) and
through a plain server span; the slope over N is the wrapper's cost per event, the
intercept the middleware's cost per request (HTTP attributes, URL, span name). Fastest of
five rounds; no I/O.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import TracerProvider

ROUNDS = 2_000
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/api/fit-check/stream",
    "raw_path": b"/api/fit-check/stream",
    "query_string": b"",
    "headers": [(b"host", b"bench"), (b"content-type", b"application/json")],
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 40000),
    "scheme": "http",
    "http_version": "1.1",
    "root_path": "",
}


def sse_app(events: int) -> Any:
    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(events):
            await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(_message: dict[str, Any]) -> None:
    return None


async def per_request_us(app: Any) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            await app(dict(SCOPE), _receive, _send)
        best = min(best, (time.perf_counter() - started) / ROUNDS)
    return best * 1e6


async def main() -> int:
    provider = TracerProvider()
    tracer = provider.get_tracer("bench.asgi_send")
    print("| SSE events | middleware µs/request | plain span µs/request | middleware's share |")
    print("|---|---|---|---|")
    extra: dict[int, float] = {}
    for events in (0, 43, 300):
        app = sse_app(events)
        middleware = OpenTelemetryMiddleware(
            app,
            tracer_provider=provider,
            meter_provider=NoOpMeterProvider(),
            exclude_spans=["send", "receive"],
        )

        async def plain(scope: Any, receive: Any, send: Any, app: Any = app) -> None:
            with tracer.start_as_current_span("POST /api/fit-check/stream"):
                await app(scope, receive, send)

        wrapped, bare = await per_request_us(middleware), await per_request_us(plain)
        extra[events] = wrapped - bare
        print(f"| {events} | {wrapped:.1f} | {bare:.1f} | {extra[events]:.1f} µs |")
    slope = (extra[300] - extra[0]) / 300
    print(f"\nper event: {slope:.2f} µs; per request: {extra[0]:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
