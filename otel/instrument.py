"""Library instrumentation: the FastAPI server span and outbound httpx spans."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import TracerProvider

#: Not traced: scrapes and probes would drown the traces people look for.
EXCLUDED_URLS = "/metrics,/health,/api/fit-check/health"


def instrument_app(app: FastAPI, tracer_provider: TracerProvider | None) -> None:
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
    )


def instrument_http_client(client: httpx.AsyncClient, tracer_provider: TracerProvider) -> None:
    """Client spans for outbound calls, with ``traceparent`` injected into each request."""
    HTTPXClientInstrumentor.instrument_client(
        client, tracer_provider=tracer_provider, meter_provider=NoOpMeterProvider()
    )
