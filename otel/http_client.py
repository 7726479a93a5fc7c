"""A client span for each outbound HTTP request, with ``traceparent`` injected.

OpenTelemetry's httpx instrumentation does this for about twice what this module costs
(docs/performance.md, "The outbound HTTP client spans"): for every request it parses the
URL again from its string,
copies and normalises the request and response headers into dicts (for header capture
that is off), and computes metric attributes for a meter it was given as a no-op. Here
the span is made from what httpx has already parsed, with the stable HTTP conventions'
attributes: method, ``url.full``, server address and port, status code, protocol version,
``error.type``. (``url.full``'s query values are redacted as the span starts, by
``otel.redact.UrlRedactingSpanProcessor``, as for every span with a URL.)

It wraps the client's public ``send``, which ``request`` and ``stream`` both go through,
so every transport (proxies from the environment included) is covered. A streamed
response's span ends when its headers arrive, as the instrumentation's does: the body is
the LLM span's to time.
"""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry import propagate
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.trace import SpanKind, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

SCOPE = "fit_check.http_client"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def trace_http_client(client: httpx.AsyncClient, tracer_provider: TracerProvider) -> None:
    """From now on, each request ``client`` sends is a client span (kind CLIENT, named
    after the method) in the current trace, and carries that trace's ``traceparent``."""
    tracer = tracer_provider.get_tracer(SCOPE)
    send = client.send

    async def traced_send(request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if not is_http_instrumentation_enabled():  # an exporter's own request, say
            return await send(request, **kwargs)
        url = request.url
        attributes: dict[str, AttributeValue] = {
            "http.request.method": request.method,
            "url.full": str(url),
            "server.address": url.host,
            "server.port": url.port or _DEFAULT_PORTS.get(url.scheme, 0),
        }
        with tracer.start_as_current_span(
            request.method, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            propagate.inject(request.headers)
            try:
                response = await send(request, **kwargs)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                raise  # the span records the exception and its ERROR status
            status = response.status_code
            span.set_attribute("http.response.status_code", status)
            span.set_attribute(
                "network.protocol.version", response.http_version.removeprefix("HTTP/")
            )
            if status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)
            return response

    # [method-assign]: ``send`` is the one method every request goes through; the instance
    # attribute shadows it for this client only.
    client.send = traced_send  # type: ignore[method-assign]
