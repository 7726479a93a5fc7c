"""Library instrumentation: the FastAPI server span and outbound httpx spans."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Span, TracerProvider, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

#: Not traced: scrapes and probes would drown the traces people look for.
EXCLUDED_URLS = "/metrics,/health,/api/fit-check/health"
_CALLER_KEY = "fit_check.caller_span_context"
_TRACE_HEADERS = (b"traceparent", b"tracestate")
_propagator = TraceContextTextMapPropagator()


class UntrustedTraceContext:
    """Hides a caller's ``traceparent`` from the server span, keeping it for a link.

    A public endpoint should not let anyone on the internet choose its trace ids or
    sampling decision (a forced ``sampled`` flag on every request is a cheap way to make a
    service export everything). The caller's context becomes a span link instead, so a
    caller that does trace us can still find our trace.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            carrier = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _TRACE_HEADERS
            }
            if carrier:
                caller = get_current_span(_propagator.extract(carrier)).get_span_context()
                scope = {
                    **scope,
                    "headers": [(k, v) for k, v in headers if k not in _TRACE_HEADERS],
                }
                if caller.is_valid:
                    scope[_CALLER_KEY] = caller
        await self._app(scope, receive, send)


def _link_caller(span: Span, scope: dict[str, Any]) -> None:
    caller = scope.get(_CALLER_KEY)
    if caller is not None and span.is_recording():
        span.add_link(caller, {"fit_check.link": "untrusted caller"})


def instrument_app(
    app: FastAPI, tracer_provider: TracerProvider | None, *, trust_incoming_trace: bool = False
) -> None:
    """Server span per request; no per-event ``send``/``receive`` spans; no HTTP metrics.

    The instrumentor's own HTTP metrics would duplicate ``fit_check_request_*`` and cost
    CPU on every request, so it gets a no-op meter provider.
    """
    if tracer_provider is None:
        return
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        meter_provider=NoOpMeterProvider(),
        excluded_urls=EXCLUDED_URLS,
        exclude_spans=["send", "receive"],
        server_request_hook=None if trust_incoming_trace else _link_caller,
    )
    if not trust_incoming_trace:
        # Outside the instrumentor's middleware, which is where the headers are read.
        build_stack = app.build_middleware_stack
        app.build_middleware_stack = lambda: UntrustedTraceContext(build_stack())  # type: ignore[method-assign]


def instrument_http_client(client: httpx.AsyncClient, tracer_provider: TracerProvider) -> None:
    """Client spans for outbound calls, with ``traceparent`` injected into each request."""
    HTTPXClientInstrumentor.instrument_client(
        client, tracer_provider=tracer_provider, meter_provider=NoOpMeterProvider()
    )
