"""Telemetry wiring: disabled SDK, resource, exporters that are dead or slow, shutdown bound."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app import __version__
from app.asgi import build_app, telemetry_config
from otel.resource import build_resource
from otel.wiring import TelemetryConfig, setup_telemetry
from tests.helpers import in_process_client, make_settings, parse_sse

STREAM = "/api/fit-check/stream"
QUERY = {"query": "Python and Kafka"}


async def stream_once(app: FastAPI) -> httpx.Response:
    async with in_process_client(app) as client:
        return await client.post(STREAM, json=QUERY)


async def test_disabled_sdk_leaves_the_service_fully_working() -> None:
    runtime = setup_telemetry(TelemetryConfig(sdk_disabled=True))
    app = build_app(make_settings(), runtime)
    response = await stream_once(app)
    events = parse_sse(response.text)
    assert events[-1][0] == "complete"
    assert events[0][1]["trace_id"] is None
    assert "traceresponse" not in response.headers
    async with in_process_client(app) as client:
        assert (await client.get("/metrics")).status_code == 404
        health = (await client.get("/api/fit-check/health")).json()
    assert health["status"] == "healthy" and health["active_sessions"] == 0


def test_resource_names_the_service_and_honours_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging,team=hiring"
    )
    resource = build_resource(
        service_name="fit-check", service_version="1.2.3", environment="local"
    )
    names = resource.attributes
    assert names["service.name"] == "fit-check"
    assert names["service.version"] == "1.2.3"
    assert names["deployment.environment.name"] == "staging"
    assert names["team"] == "hiring"
    other = build_resource(service_name="fit-check", service_version="1", environment="x")
    assert names["service.instance.id"] != other.attributes["service.instance.id"]


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: the slowest collector."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


SPAN_PROCESSORS = ["batch", "fastotel"]


@pytest.mark.parametrize("span_processor", SPAN_PROCESSORS)
@pytest.mark.parametrize("endpoint_fixture", ["black_hole", "closed_port"])
async def test_dead_or_slow_collector_costs_no_answer_and_shutdown_is_bounded(
    request: pytest.FixtureRequest,
    endpoint_fixture: str,
    span_processor: Literal["batch", "fastotel"],
) -> None:
    endpoint = request.getfixturevalue(endpoint_fixture)
    runtime = setup_telemetry(
        TelemetryConfig(
            otlp_endpoint=endpoint, shutdown_timeout_s=1.0, span_processor=span_processor
        )
    )
    app = build_app(make_settings(), runtime)
    for _ in range(3):
        events = parse_sse((await stream_once(app)).text)
        assert events[-1][0] == "complete"
    started = time.monotonic()
    await asyncio.to_thread(runtime.shutdown)
    assert time.monotonic() - started < 2.5


async def test_no_endpoint_means_nothing_pushed_and_nothing_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = setup_telemetry(TelemetryConfig())
    app = build_app(make_settings(), runtime)
    with caplog.at_level(logging.WARNING):
        await stream_once(app)
        assert runtime.shutdown() is True
    # Exporters of earlier tests may still be retrying their dead endpoints on daemon
    # threads; an exporter of this app would try the OTLP defaults, ports 4317/4318.
    ours = [
        r
        for r in caplog.records
        if r.name.startswith("opentelemetry")
        and any(port in r.getMessage() for port in (":4317", ":4318", "port=4317", "port=4318"))
    ]
    assert not ours


class _TraceReceiver(BaseHTTPRequestHandler):
    """OTLP/HTTP ``/v1/traces``: decodes each export and keeps its span count."""

    batches: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            self.batches.append(
                sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
            )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


@pytest.fixture
def trace_receiver() -> Iterator[tuple[str, list[int]]]:
    batches: list[int] = []
    handler = type("Receiver", (_TraceReceiver,), {"batches": batches})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", batches
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("span_processor", SPAN_PROCESSORS)
@pytest.mark.parametrize(
    ("env", "largest"), [({}, 64), ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8"}, 8)]
)
async def test_spans_are_exported_in_small_batches(
    monkeypatch: pytest.MonkeyPatch,
    trace_receiver: tuple[str, list[int]],
    env: dict[str, str],
    largest: int,
    span_processor: str,
) -> None:
    # Encoding a batch holds the GIL: the default is 64 spans, not the SDK's 512, and the
    # standard variable still decides, with either span processor.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    endpoint, batches = trace_receiver
    settings = make_settings(otlp_endpoint=endpoint, span_processor=span_processor)
    runtime = setup_telemetry(telemetry_config(settings))
    assert runtime.exports["traces"].endswith(" (fastotel)") == (span_processor == "fastotel")
    app = build_app(settings, runtime)
    for _ in range(12):  # about 120 spans: more than one batch of 64
        assert parse_sse((await stream_once(app)).text)[-1][0] == "complete"
    assert await asyncio.to_thread(runtime.shutdown)
    assert sum(batches) >= 120
    assert max(batches) == largest


@pytest.mark.parametrize("why", ["grpc", "not installed"])
async def test_fastotel_that_cannot_serve_falls_back_to_the_stock_processor(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    trace_receiver: tuple[str, list[int]],
    why: str,
) -> None:
    endpoint, batches = trace_receiver
    if why == "not installed":
        monkeypatch.setitem(sys.modules, "fastotel", None)  # its import raises ImportError
        settings = make_settings(otlp_endpoint=endpoint, span_processor="fastotel")
    else:
        # Metrics not pushed: a gRPC exporter at this HTTP receiver would retry past the
        # test and print its failures at the end of the run.
        settings = make_settings(
            otlp_endpoint=endpoint,
            otlp_protocol="grpc",
            span_processor="fastotel",
            metrics_exporters=("none",),
        )
    with caplog.at_level(logging.WARNING, logger="fit_check.telemetry"):
        runtime = setup_telemetry(telemetry_config(settings))
    assert "fastotel" in caplog.text
    assert "BatchSpanProcessor" in caplog.text
    assert not runtime.exports["traces"].endswith("(fastotel)")
    if why == "not installed":  # the stock pipeline exports in its place
        app = build_app(settings, runtime)
        assert parse_sse((await stream_once(app)).text)[-1][0] == "complete"
        assert await asyncio.to_thread(runtime.shutdown)
        assert sum(batches) >= 10
    else:
        await asyncio.to_thread(runtime.shutdown)


def test_the_telemetry_config_takes_each_field_from_its_setting() -> None:
    """No hand-copied list: every field but the version and the shutdown bound comes
    from the setting of its name (a field without one fails here)."""
    settings = make_settings(
        otel_service_name="fit-check-x",
        span_batch_size=7,
        recent_traces=3,
        capture_message_content="EVENT_ONLY",
    )
    config = telemetry_config(settings)
    assert config.service_name == "fit-check-x"
    assert config.span_batch_size == 7
    assert config.recent_traces == 3
    assert config.content_capture == "EVENT_ONLY"
    assert config.service_version == __version__
