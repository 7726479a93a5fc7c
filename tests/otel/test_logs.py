"""JSON log lines of a real stream carry the trace id the client received."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from app.pipeline.events import PHASES
from otel.logging import TraceContextFilter, configure_logging, json_formatter
from tests.conftest import parse_sse

STREAM = "/api/fit-check/stream"
REQUIRED = {"timestamp", "level", "logger", "message", "module", "function", "line"}


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(json_formatter())
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(old_level)


def records(buffer: io.StringIO) -> list[dict]:
    lines = buffer.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is exactly one JSON object
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


async def test_every_request_line_carries_the_clients_trace_id(client, json_log) -> None:
    response = await client.post(STREAM, json={"query": "Python, Kafka", "session_id": "logs-1"})
    trace_id = parse_sse(response.text)[0][1]["trace_id"]
    lines = [r for r in records(json_log) if r.get("session_id") == "logs-1"]
    assert lines, "no request lines"
    for line in lines:
        assert set(line) >= REQUIRED, line
        assert line["trace_id"] == trace_id
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        stamp = datetime.fromisoformat(line["timestamp"])
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    messages = [(r["message"], r.get("phase")) for r in lines]
    assert messages[0] == ("Request started", None)
    for phase in PHASES:
        assert ("Phase started", phase) in messages
        done = next(r for r in lines if r["message"] == "Phase completed" and r["phase"] == phase)
        assert done["status"] == "success" and isinstance(done["duration_ms"], int)
    last = lines[-1]
    assert last["message"] == "Request completed"
    assert last["status"] == "success" and isinstance(last["duration_ms"], int)


async def test_lines_outside_a_request_have_no_trace_fields(json_log) -> None:
    logging.getLogger("fit_check.test").info("idle")
    (line,) = records(json_log)
    assert "trace_id" not in line and "session_id" not in line
    assert line["level"] == "INFO" and line["logger"] == "fit_check.test"


async def test_hostile_text_cannot_forge_lines_or_fields(client, json_log) -> None:
    query = 'x"}\n{"level": "CRITICAL", "trace_id": "forged"}\r\nend \u2028 \u202e'
    await client.post(STREAM, json={"query": query, "session_id": "inject-1"})
    logging.getLogger("fit_check.test").warning(query, extra={"trace_id": "forged"})
    for line in records(json_log):
        assert line.get("trace_id") != "forged"
        assert line["level"] != "CRITICAL"


def test_exceptions_are_logged_in_one_field(json_log) -> None:
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
