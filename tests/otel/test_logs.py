"""JSON log lines of a real stream carry the trace id the client received."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from app.pipeline.events import PHASES
from otel.log_lines import (
    TelemetryNoiseLimiter,
    configure_logging,
)
from tests.helpers import in_process_client, parse_sse

STREAM = "/api/fit-check/stream"
REQUIRED = {"timestamp", "level", "logger", "message", "module", "function", "line"}


def records(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = buffer.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is exactly one JSON object
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


async def test_every_request_line_carries_the_clients_trace_id(
    client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    response = await client.post(STREAM, json={"query": "Python, Kafka", "session_id": "logs-1"})
    trace_id = parse_sse(response.text)[0][1]["trace_id"]
    lines = [r for r in records(json_log) if r.get("session_id") == "logs-1"]
    assert lines, "no request lines"
    for line in lines:
        assert set(line) >= REQUIRED, line
        assert line["trace_id"] == trace_id
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        stamp = datetime.fromisoformat(line["timestamp"])
        offset = stamp.utcoffset()
        assert offset is not None and offset.total_seconds() == 0
    messages = [(r["message"], r.get("phase")) for r in lines]
    assert messages[0] == ("Request started", None)
    for phase in PHASES:
        assert ("Phase started", phase) in messages
        done = next(r for r in lines if r["message"] == "Phase completed" and r["phase"] == phase)
        assert done["status"] == "success" and isinstance(done["duration_ms"], int)
    last = lines[-1]
    assert last["message"] == "Request completed"
    assert last["status"] == "success" and isinstance(last["duration_ms"], int)


async def test_lines_outside_a_request_have_no_trace_fields(json_log: io.StringIO) -> None:
    logging.getLogger("fit_check.test").info("idle")
    (line,) = records(json_log)
    assert "trace_id" not in line and "session_id" not in line
    assert line["level"] == "INFO" and line["logger"] == "fit_check.test"


async def test_hostile_text_cannot_forge_lines_or_fields(
    client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    query = 'x"}\n{"level": "CRITICAL", "trace_id": "forged"}\r\nend \u2028 \u2029 \x85 \u202e'
    await client.post(STREAM, json={"query": query, "session_id": "inject-1"})
    logging.getLogger("fit_check.test").warning(query, extra={"trace_id": "forged"})
    for line in records(json_log):
        assert line.get("trace_id") != "forged"
        assert line["level"] != "CRITICAL"


def test_exceptions_are_logged_in_one_field(json_log: io.StringIO) -> None:
    try:
        raise ValueError("kaboom")
    except ValueError:
        logging.getLogger("fit_check.test").exception("failed")
    (line,) = records(json_log)
    assert "ValueError: kaboom" in line["exception"]


def test_configure_logging_routes_uvicorn_through_one_handler() -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        stream = io.StringIO()
        configure_logging(level="INFO", fmt="json", stream=stream)
        logging.getLogger("uvicorn.error").info("server says hi")
        logging.getLogger("httpx").info("too chatty")
        (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
        assert line["logger"] == "uvicorn.error" and line["message"] == "server says hi"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_log_file_gets_json_lines_with_trace_context_whatever_the_stream_format(
    tmp_path: Path,
) -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    path = tmp_path / "logs" / "fit-check.log"
    try:
        stream = io.StringIO()
        configure_logging(level="INFO", fmt="text", stream=stream, file=path)
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("request") as span:
            logging.getLogger("fit_check.test").info("inside", extra={"phase": "research"})
        (line,) = [json.loads(x) for x in path.read_text().splitlines()]
        assert line["message"] == "inside" and line["phase"] == "research"
        assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
        assert line["span_id"] == format(span.get_span_context().span_id, "016x")
        assert "inside" in stream.getvalue() and not stream.getvalue().startswith("{")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_log_file_rotates_by_size_and_keeps_two_old_files(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    path = tmp_path / "fit-check.log"
    try:
        stream = io.StringIO()
        configure_logging(level="INFO", fmt="json", stream=stream, file=path, file_max_bytes=4096)
        for n in range(100):
            logging.getLogger("fit_check.test").info("line %03d", n)
        files = sorted(tmp_path.iterdir())
        # Formatted once, written twice: the same line on stdout and in the file.
        assert stream.getvalue().splitlines()[-3:] == path.read_text().splitlines()[-3:]
        assert [f.name for f in files] == ["fit-check.log", "fit-check.log.1", "fit-check.log.2"]
        assert all(f.stat().st_size <= 4096 for f in files)
        newest = [json.loads(x) for x in path.read_text().splitlines()]
        assert newest[-1]["message"] == "line 099"
        assert all(set(line) <= REQUIRED | {"taskName"} for line in newest), newest[-1]
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_noise_limiter_passes_one_line_per_template_per_interval() -> None:
    now = [0.0]
    limiter = TelemetryNoiseLimiter(interval_s=30, clock=lambda: now[0])

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, ("span",), None)

    sdk = "opentelemetry.sdk._shared_internal"
    passed = [limiter.filter(record(sdk, "Queue full, dropping %s.")) for _ in range(1000)]
    assert passed.count(True) == 1
    assert limiter.filter(record(sdk, "another template"))
    assert limiter.filter(record("fit_check.session", "Queue full, dropping %s."))
    now[0] = 31
    later = record(sdk, "Queue full, dropping %s.")
    assert limiter.filter(later) and getattr(later, "suppressed", None) == 999


async def test_a_dead_collector_logs_a_few_lines_not_one_per_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket
    from dataclasses import replace

    from app.asgi import build_app, telemetry_config
    from otel.wiring import setup_telemetry
    from tests.helpers import make_settings, wait_until

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens: every export is refused
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    raw = []  # every record the exporter emits, before any filtering of ours

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raw.append(record.getMessage())

    exporter_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    counter = Count()
    exporter_logger.addHandler(counter)
    stream = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        configure_logging(level="WARNING", fmt="json", stream=stream)
        settings = make_settings(otlp_endpoint=dead)  # reads the OTEL_BSP_* set above
        config = replace(telemetry_config(settings), shutdown_timeout_s=0.5)
        runtime = setup_telemetry(config)
        app = build_app(settings, runtime)
        async with in_process_client(app) as client:
            for _ in range(10):
                response = await client.post("/api/fit-check/stream", json={"query": "Go"})
                assert "event: complete" in response.text
        await wait_until(lambda: len(raw) >= 6, timeout_s=20)
        runtime.shutdown()
    finally:
        exporter_logger.removeHandler(counter)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    exporter_lines = [x for x in lines if x["logger"] == exporter_logger.name]
    templates = {x["message"].split(" ")[0] for x in exporter_lines}
    assert len(exporter_lines) <= 2 * len(templates) < len(raw), (len(exporter_lines), len(raw))
