"""Outbound HTTP client spans: attributes, status, errors, propagation, suppression."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel.http_client import trace_http_client
from otel.redact import UrlRedactingSpanProcessor
from tests.helpers import attrs


class Recorded:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        # As the service wires it: URLs are redacted as spans start.
        self.provider.add_span_processor(UrlRedactingSpanProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.requests: list[httpx.Request] = []

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    def client(self, status: int = 200, error: Exception | None = None) -> httpx.AsyncClient:
        def answer(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            if error is not None:
                raise error
            return httpx.Response(status, text="body")

        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        trace_http_client(client, self.provider)
        return client


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    recorded = Recorded()
    yield recorded
    recorded.provider.shutdown()


async def test_a_request_is_a_client_span_with_the_stable_http_attributes(
    recorded: Recorded,
) -> None:
    async with recorded.client() as client:
        response = await client.post("https://api.example.com/v1/chat?key=secret&q=mine")
    assert response.status_code == 200
    (span,) = recorded.spans()
    assert span.name == "POST" and span.kind is SpanKind.CLIENT
    assert dict(attrs(span)) == {
        "http.request.method": "POST",
        "url.full": "https://api.example.com/v1/chat?key=REDACTED&q=REDACTED",
        "server.address": "api.example.com",
        "server.port": 443,
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_the_request_carries_its_span_as_traceparent(recorded: Recorded) -> None:
    tracer = recorded.provider.get_tracer("test")
    async with recorded.client() as client:
        with tracer.start_as_current_span("caller") as caller:
            await client.get("http://127.0.0.1:8080/search")
    client_span = next(s for s in recorded.spans() if s.name == "GET")
    assert client_span.parent is not None
    assert client_span.parent.span_id == caller.get_span_context().span_id
    assert attrs(client_span)["server.port"] == 8080
    (request,) = recorded.requests
    context = client_span.get_span_context()
    assert context is not None
    assert request.headers["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )


@pytest.mark.parametrize("status", [399, 400, 503])
async def test_a_4xx_or_5xx_status_marks_the_span(recorded: Recorded, status: int) -> None:
    async with recorded.client(status=status) as client:
        assert (await client.get("http://api.example.com/")).status_code == status
    (span,) = recorded.spans()
    assert attrs(span)["http.response.status_code"] == status
    if status < 400:
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in attrs(span)
    else:
        assert span.status.status_code is StatusCode.ERROR
        assert attrs(span)["error.type"] == str(status)


async def test_a_failed_request_records_its_exception_and_raises_it(recorded: Recorded) -> None:
    async with recorded.client(error=httpx.ConnectError("refused")) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://api.example.com/")
    (span,) = recorded.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "ConnectError"
    assert [event.name for event in span.events] == ["exception"]
    assert "http.response.status_code" not in attrs(span)


async def test_a_streamed_response_s_span_ends_with_its_headers(recorded: Recorded) -> None:
    async with recorded.client() as client, client.stream("GET", "http://api.example.com/") as r:
        (span,) = recorded.spans()  # ended before the body is read
        assert attrs(span)["http.response.status_code"] == 200
        assert await r.aread() == b"body"


async def test_suppressed_requests_make_no_span_and_carry_no_trace(recorded: Recorded) -> None:
    async with recorded.client() as client:
        with suppress_http_instrumentation():
            assert (await client.get("http://api.example.com/")).status_code == 200
    assert recorded.spans() == ()
    assert "traceparent" not in recorded.requests[0].headers
