"""The FastAPI server span: OpenTelemetry's instrumentation, behind a gate for the caller's
trace context. (Outbound HTTP spans: ``otel.http_client``.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Span, SpanContext, TracerProvider, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
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
        self._app = app
        self._trust_caller = trust_caller
        self._resume_parent = resume_parent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = await self._gate(scope)
        await self._app(scope, receive, send)

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


def instrument_app(
    app: FastAPI,
    tracer_provider: TracerProvider | None,
    *,
    trust_incoming_trace: bool = False,
    resume_parent: ResumeParent | None = None,
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
        server_request_hook=_server_request_hook,
    )
    # Outside the instrumentor's middleware, which is where the headers are read.
    build_stack = app.build_middleware_stack

    def gated_stack() -> ASGIApp:
        return IncomingTraceGate(
            build_stack(), trust_caller=trust_incoming_trace, resume_parent=resume_parent
        )

    # [method-assign]: the only hook outside every middleware Starlette builds, which is
    # where the gate must sit (before the instrumentor reads the headers).
    app.build_middleware_stack = gated_stack  # type: ignore[method-assign]
