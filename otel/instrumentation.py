"""The server span's layers of the ASGI stack, and Redis client spans. (Outbound HTTP
spans: ``otel.http_client``.)

The composition root (``app/asgi.py``, ``asgi_stack``) places these layers; from the
outside in: ``IncomingTraceGate`` (the span's parent), ``server_spans`` (the span) and,
inside Starlette's ``ServerErrorMiddleware``, ``ExceptionsOnSpan`` (an exception recorded
on the span). This is how ``FastAPIInstrumentor.instrument_app`` wires OpenTelemetry's ASGI
middleware, with the stack built in the open instead of by patching
``build_middleware_stack``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

# Private, and the one name used from FastAPI's instrumentation: the span's name and
# ``http.route`` from the route a request matches (FastAPI's nested routers included).
# tests/app/test_asgi_stack.py fails at once if it changes.
from opentelemetry.instrumentation.fastapi import _get_default_span_details
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import (
    Span,
    SpanContext,
    Status,
    StatusCode,
    TracerProvider,
    get_current_span,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.http import parse_excluded_urls
from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from otel.redact import redact_url_attributes

#: Not traced (regular expressions, searched in the URL): scrapes, probes, the docs and the
#: demo page's files would drown the traces people look for.
EXCLUDED_URLS = ",".join(
    (
        "/metrics",
        "/health",
        "/ready",
        "/api/fit-check/health",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/static",
        "/trace/",
        r"://[^/]+/(\?|$)",  # the demo page itself
    )
)
_CALLER_KEY = "fit_check.caller_span_context"
_UNTRUSTED_HEADERS = (b"traceparent", b"tracestate", b"baggage")
_LAST_EVENT_ID = b"last-event-id"
_propagator = TraceContextTextMapPropagator()

#: Given a reconnect's ``Last-Event-ID``, the ``traceparent`` of the session it resumes.
ResumeParent = Callable[[str], Awaitable["str | None"]]


class IncomingTraceGate:
    """Decides the parent of each request's server span before the instrumentor reads it.

    * Untrusted (the default): a caller's ``traceparent``, ``tracestate`` and ``baggage``
      are hidden from the server span. A public endpoint should not let anyone on the
      internet choose its trace ids or sampling decision (a forced ``sampled`` flag on
      every request is a cheap way to make a service export everything), nor have their
      baggage forwarded to our LLM and search providers (the outbound instrumentation
      propagates whatever context is current). The caller's trace context becomes a span
      link instead, so a caller that does trace us can still find our trace.
    * A reconnect that resumes a live session (``Last-Event-ID``): its server span is made
      a child of the session's first span, so one session is one trace however many times
      its client reconnects. This context is ours, so it is trusted either way.
    """

    def __init__(
        self, app: ASGIApp, *, trust_caller: bool, resume_parent: ResumeParent | None
    ) -> None:
        self.app = app
        self._trust_caller = trust_caller
        self._resume_parent = resume_parent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = await self._gate(scope)
        await self.app(scope, receive, send)

    async def _gate(self, scope: Scope) -> Scope:
        headers = scope["headers"]
        resumed = None
        if self._resume_parent is not None:
            for name, value in headers:
                if name == _LAST_EVENT_ID:
                    resumed = await self._resume_parent(value.decode("latin-1"))
                    break
        if resumed is None and self._trust_caller:
            return scope
        incoming = [(k, v) for k, v in headers if k in _UNTRUSTED_HEADERS]
        if not incoming and resumed is None:
            return scope
        kept = [(k, v) for k, v in headers if k not in _UNTRUSTED_HEADERS]
        if resumed is not None:
            kept.append((b"traceparent", resumed.encode("latin-1")))
            if self._trust_caller:  # keep a trusted caller's baggage
                kept.extend((k, v) for k, v in incoming if k == b"baggage")
        scope = {**scope, "headers": kept}
        caller = _caller_span_context(incoming)
        if caller is not None:
            scope[_CALLER_KEY] = caller
        return scope


def _caller_span_context(headers: list[tuple[bytes, bytes]]) -> SpanContext | None:
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k != b"baggage"}
    if not carrier:
        return None
    caller = get_current_span(_propagator.extract(carrier)).get_span_context()
    return caller if caller.is_valid else None


def _server_request_hook(span: Span, scope: dict[str, Any]) -> None:
    """Runs once the instrumentor has set the server span's request attributes."""
    if not span.is_recording():
        return
    redact_url_attributes(span)
    caller = scope.get(_CALLER_KEY)
    if caller is not None:
        span.add_link(caller, {"fit_check.link": "untrusted caller"})


def instrument_redis(client: Redis, tracer_provider: TracerProvider | None) -> None:
    """Client spans for a Redis client's calls (``db.system.name=redis``), made under the
    current span; calls inside ``Telemetry.untraced`` make none."""
    if tracer_provider is not None:
        RedisInstrumentor.instrument_client(client, tracer_provider=tracer_provider)


def server_spans(app: ASGIApp, tracer_provider: TracerProvider) -> ASGIApp:
    """A server span per request around ``app``, named and given ``http.route`` from the
    FastAPI route the request matches; no per-event ``send``/``receive`` spans; no HTTP
    metrics.

    The instrumentation's own HTTP metrics would duplicate ``fit_check_request_*`` and cost
    CPU on every request, so it gets a no-op meter provider.
    """
    middleware: ASGIApp = OpenTelemetryMiddleware(
        app,
        excluded_urls=parse_excluded_urls(EXCLUDED_URLS),
        default_span_details=_get_default_span_details,
        server_request_hook=_server_request_hook,
        tracer_provider=tracer_provider,
        meter_provider=NoOpMeterProvider(),
        exclude_spans=["send", "receive"],
    )
    return middleware


class ExceptionsOnSpan:
    """Records an exception on the current (server) span and re-raises it. Placed just
    inside Starlette's ``ServerErrorMiddleware``, itself inside the span, it records the
    exception before the 500 is sent and the span ends (``FastAPIInstrumentor``'s
    ``ExceptionHandlerMiddleware``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            span = get_current_span()
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
