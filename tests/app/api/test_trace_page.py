"""``/trace/{id}``: from this process's memory with no trace back-end, from Jaeger with one."""

from __future__ import annotations

import html
import json
import re
import socket
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.asgi import build_app, telemetry_config
from app.pipeline.events import PHASES
from otel.testing import captured_telemetry
from otel.wiring import TelemetryConfig
from tests.helpers import (
    HarnessFactory,
    LiveServerFactory,
    in_process_client,
    make_settings,
    parse_sse,
)

STREAM = "/api/fit-check/stream"
QUERY = "Ledgerline Payments, staff engineer for Kafka"
JAEGER_UI = "http://jaeger.example:16686"
UNKNOWN = "0123456789abcdef0123456789abcdef"


async def stream_trace_id(app: FastAPI, query: str = QUERY) -> str:
    async with in_process_client(app) as client:
        response = await client.get(STREAM, params={"query": query})
    events = parse_sse(response.text)
    assert events[-1][0] == "complete"
    trace_id: str = events[0][1]["trace_id"]
    return trace_id


def demo_config(page: str) -> dict[str, Any]:
    found = re.search(r'<script id="config" type="application/json">(.*?)</script>', page)
    assert found, page
    config: dict[str, Any] = json.loads(found.group(1))
    return config


def note(page: str) -> str:
    found = re.search(r"<p>(.*?)</p>", page)
    assert found, page
    return html.unescape(found.group(1))


async def test_with_no_back_end_a_streamed_trace_is_shown_from_memory(
    harness_factory: HarnessFactory,
) -> None:
    h = harness_factory(jaeger_ui_url=JAEGER_UI, jaeger_url="http://127.0.0.1:9")
    trace_id = await stream_trace_id(h.app)
    async with in_process_client(h.app) as client:
        page = await client.get(f"/trace/{trace_id}")
        demo = await client.get("/")
    assert page.status_code == 200
    tree = page.text
    for phase in PHASES:
        assert f"fit_check.phase {phase}" in tree
    assert "GET /api/fit-check/stream" in tree and "fit_check.outcome=success" in tree
    assert note(tree) == "kept in this process's memory (the last 50 traces, at most 5 MiB)"
    assert QUERY not in tree and "Ledgerline" not in tree
    # The demo page links each trace here, not to a Jaeger that has none of them.
    assert demo_config(demo.text)["trace_ui_url"] == ""


async def test_a_trace_no_longer_kept_is_a_404_that_says_so() -> None:
    settings = make_settings(recent_traces=1)
    captured = captured_telemetry(telemetry_config(settings))
    app = build_app(settings, captured.runtime)
    first = await stream_trace_id(app)
    second = await stream_trace_id(app)
    async with in_process_client(app) as client:
        gone = await client.get(f"/trace/{first}")
        kept = await client.get(f"/trace/{second}")
        unknown = await client.get(f"/trace/{UNKNOWN}")
        malformed = await client.get("/trace/not-a-trace-id")
    assert kept.status_code == 200 and "fit_check.phase generate_results" in kept.text
    for page in (gone, unknown):
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert note(page.text) == (
            "not in this process's memory, which keeps the last 1 traces, at most 5 MiB, when "
            "no trace back-end is configured: this trace is older, from before a restart, or "
            "another worker's"
        )
        assert '<pre class="trace"></pre>' in page.text
    assert malformed.status_code == 404
    assert note(malformed.text) == "not a trace id: 32 lowercase hex characters"


def fake_jaeger(asked: list[str]) -> Starlette:
    """Jaeger's query API v3, answering one canned span for any trace id."""

    async def trace(request: Request) -> JSONResponse:
        asked.append(request.path_params["trace_id"])
        span = {
            "spanId": "00f067aa0ba902b7",
            "name": "span from jaeger",
            "startTimeUnixNano": "1000000",
            "endTimeUnixNano": "3000000",
            "attributes": [{"key": "session_id", "value": {"stringValue": "from-jaeger"}}],
        }
        return JSONResponse({"result": {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}})

    return Starlette(routes=[Route("/api/v3/traces/{trace_id}", trace)])


@pytest.fixture
def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def with_back_end(closed_port: str) -> TelemetryConfig:
    """OTLP configured (to a port nobody listens on: nothing is streamed, so nothing is
    sent)."""
    return TelemetryConfig(traces_exporters=("otlp",), otlp_traces_endpoint=closed_port)


async def test_with_a_back_end_the_page_reads_jaeger_and_the_demo_links_to_its_ui(
    live_server: LiveServerFactory, closed_port: str
) -> None:
    asked: list[str] = []
    async with live_server(fake_jaeger(asked)) as jaeger:
        settings = make_settings(jaeger_ui_url=JAEGER_UI, jaeger_url=jaeger.url)
        captured = captured_telemetry(with_back_end(closed_port))
        assert captured.runtime.telemetry.recent_traces is None
        app = build_app(settings, captured.runtime)
        async with in_process_client(app) as client:
            page = await client.get(f"/trace/{UNKNOWN}")
            demo = await client.get("/")
        captured.runtime.shutdown()
    assert asked == [UNKNOWN]
    assert page.status_code == 200
    assert note(page.text) == f"from {jaeger.url}"
    assert "span from jaeger  [session_id=from-jaeger]" in page.text
    assert demo_config(demo.text)["trace_ui_url"] == JAEGER_UI


async def test_with_a_back_end_and_no_jaeger_the_page_says_so(closed_port: str) -> None:
    settings = make_settings(jaeger_url=closed_port)
    captured = captured_telemetry(with_back_end(closed_port))
    app = build_app(settings, captured.runtime)
    async with in_process_client(app) as client:
        page = await client.get(f"/trace/{UNKNOWN}")
    captured.runtime.shutdown()
    assert page.status_code == 502
    assert note(page.text) == f"Jaeger at {closed_port} did not answer (ConnectError)"
