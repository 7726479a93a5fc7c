"""The facade's request scope, driven directly: what it records for each outcome."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.trace import StatusCode

from otel.testing import CapturedTelemetry, captured_telemetry

ROOT = "POST /api/fit-check/stream"


@pytest.fixture
def captured() -> Iterator[CapturedTelemetry]:
    telemetry = captured_telemetry()
    yield telemetry
    telemetry.runtime.shutdown()


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def run_request(captured: CapturedTelemetry, seconds: float, *, cancel: bool) -> None:
    """A request of ``seconds`` under a server span; cancelled then, as a client's leaving
    ends it, when ``cancel``."""
    telemetry, provider = captured.runtime.telemetry, captured.runtime.tracer_provider
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span(ROOT):

        async def body() -> None:
            with telemetry.analysis("facade-1", query_length=6) as scope:
                telemetry.first_event(scope)
                telemetry.first_event(scope)  # not a first any more
                await asyncio.sleep(10 if cancel else seconds)

        task = asyncio.create_task(body())
        if cancel:
            await asyncio.sleep(seconds)
            task.cancel()
        with pytest.raises(asyncio.CancelledError) if cancel else contextlib.nullcontext():
            await task


async def test_a_cancelled_requests_line_says_why_and_how_long(
    captured: CapturedTelemetry, json_log: io.StringIO
) -> None:
    started = time.perf_counter()
    await run_request(captured, 0.05, cancel=True)
    elapsed_ms = (time.perf_counter() - started) * 1000
    (done,) = [line for line in lines(json_log) if line["message"] == "Request completed"]
    assert done["status"] == "cancelled" and done["reason"] == "client_gone"
    assert 50 <= done["duration_ms"] <= elapsed_ms + 1
    (root,) = [s for s in captured.finished_spans() if s.name == ROOT]
    assert (root.status.status_code, root.status.description) == (StatusCode.ERROR, "cancelled")


async def test_a_success_is_no_error_and_times_its_first_event_once(
    captured: CapturedTelemetry, json_log: io.StringIO
) -> None:
    await run_request(captured, 0.02, cancel=False)
    (done,) = [line for line in lines(json_log) if line["message"] == "Request completed"]
    assert done["status"] == "success" and "reason" not in done
    assert 20 <= done["duration_ms"] < 5000
    (root,) = [s for s in captured.finished_spans() if s.name == ROOT]
    assert root.status.status_code is StatusCode.UNSET
    points = {
        metric.name: point
        for metric, point in captured.metric_points()
        if isinstance(point, HistogramDataPoint)
    }
    first, whole = points["fit_check.time_to_first_event"], points["fit_check.request.duration"]
    assert first.count == whole.count == 1
    assert 0 <= first.sum <= whole.sum < 10
