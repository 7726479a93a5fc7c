"""What one unit of telemetry costs in this process, and how many units a stream makes.

The throughput rounds say how much the telemetry adds per stream; this says why. It runs
real streams through the app in process (offline providers, in-memory telemetry) to count
what one stream produces, then times each kind of unit alone with the production wiring
(``setup_telemetry``'s processors and readers, exporting to nowhere), not the test
harness's in-memory exporter, which costs more per span: a span started and ended, a span
encoded as OTLP protobuf, a JSON log line with trace context, a histogram record into the
service's two metric readers (with exemplars), a counter add (``otel.metrics.Totals``),
and a render of ``/metrics``. Units times counts is the telemetry's floor in this wiring
(``bench.ir`` counts the stock SDK's floor in instructions).

Usage: python -m bench.units  (about 30 s; ``make bench`` runs it first)
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import httpx
from opentelemetry import context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from app.asgi import build_app
from app.config import Settings
from otel.context import bind_session
from otel.facade import Telemetry
from otel.histograms import PeriodicReader
from otel.log_lines import configure_logging
from otel.metrics import Totals
from otel.testing import captured_telemetry
from otel.wiring import TelemetryConfig, TelemetryRuntime, lean_histograms, setup_telemetry

COUNTERS = (
    "fit_check.requests",
    "fit_check.phase.completions",
    "fit_check.llm.calls",
    "fit_check.search.calls",
)
QUERY = {"query": "Senior Python engineer, FastAPI, Kubernetes"}


def best_us(work: Callable[[], object], repeat: int, rounds: int = 5) -> float:
    """CPU microseconds per call: the fastest of ``rounds`` (the machine's speed drifts)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(repeat):
            work()
        best = min(best, (time.process_time() - started) / repeat * 1e6)
    return best


def per_stream_counts(streams: int) -> tuple[dict[str, float], Any, Any]:
    """Spans, log lines and measurements of one stream, averaged over ``streams`` real ones."""
    captured = captured_telemetry()
    settings = Settings(_env_file=None, otel_sdk_disabled=False, log_level="INFO")
    app = build_app(settings, captured.runtime)
    lines = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=lines)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(streams):
                response = await client.post("/api/fit-check/stream", json=QUERY)
                assert "event: complete" in response.text, response.text[-300:]

    asyncio.run(run())
    points = list(captured.metric_points())
    records = sum(point.count for _, point in points if isinstance(point, HistogramDataPoint))
    # Every counter call adds 1, so a counter's total is its number of calls.
    adds = sum(
        point.value
        for metric, point in points
        if isinstance(point, NumberDataPoint) and metric.name in COUNTERS
    )
    spans = captured.finished_spans()
    counts = {
        "spans": len(spans) / streams,
        # +1: uvicorn's access line, which in-process requests do not write.
        "log lines": lines.getvalue().count("\n") / streams + 1,
        "histogram records": records / streams,
        "counter adds": adds / streams,
    }
    return counts, captured, spans


class _DiscardSpans(SpanExporter):
    """Sends nothing: the export path's cost in the process, without a network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _DiscardMetrics(MetricExporter):
    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def production_runtime() -> TelemetryRuntime:
    """The service's own wiring (its span processors, a batch processor, the Prometheus
    reader and a periodic push reader), exporting to nowhere: what a unit costs in the
    service, without the test harness's in-memory exporter and span counter. (A service
    that exports keeps no traces in memory: neither does this one.)"""
    config = TelemetryConfig(recent_traces=0)
    histograms = lean_histograms(config)
    return setup_telemetry(
        config,
        extra_span_processors=[BatchSpanProcessor(_DiscardSpans(), max_export_batch_size=64)],
        extra_metric_readers=[PeriodicReader(histograms, _DiscardMetrics())],
        histograms=histograms,
    )


def unit_costs(
    runtime: TelemetryRuntime, rendered: Telemetry, spans: Any, scale: int, sink: IO[str]
) -> dict[str, float]:
    """``rendered``: telemetry that has served streams, so ``/metrics`` has every series."""
    assert runtime.tracer_provider is not None and runtime.meter_provider is not None
    tracer = runtime.tracer_provider.get_tracer("bench.units")
    meter = runtime.meter_provider.get_meter("bench.units")
    histogram = meter.create_histogram("bench.units.duration", unit="s")
    totals = Totals(meter, "bench.units.calls", description="counter adds")
    logger = logging.getLogger("fit_check.bench")
    configure_logging(level="INFO", fmt="json", stream=sink)
    batch = list(spans)[:500]
    attrs = {"fit_check.phase": "deep_research"}

    def span() -> None:
        tracer.start_span("fit_check.phase deep_research", attributes=attrs).end()

    costs: dict[str, float] = {}
    # Inside a recorded span and a session, as in a request: logs stamp both, measurements
    # offer exemplars.
    with tracer.start_as_current_span("bench"):
        token = bind_session("bench-session")
        costs["span"] = best_us(span, 500 * scale)
        costs["log line"] = best_us(
            lambda: logger.info(
                "Phase completed",
                extra={"phase": "deep_research", "status": "success", "duration_ms": 12},
            ),
            500 * scale,
        )
        costs["metric"] = best_us(
            lambda: histogram.record(0.3, {"phase": "deep_research"}), 1_000 * scale
        )
        costs["count"] = best_us(
            lambda: totals.add(1, {"phase": "deep_research", "status": "success"}), 1_000 * scale
        )
        context.detach(token)
    costs["encode"] = best_us(lambda: encode_spans(batch), 2 * scale) / len(batch)
    costs["render"] = best_us(lambda: rendered.render_metrics(None), 10 * scale)
    return costs


def measure(*, quick: bool = False) -> dict[str, Any]:
    """Counts per stream, cost per unit, and their products (``quick``: a fifth the work)."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level  # configure_logging swaps them
    try:
        counts, captured, spans = per_stream_counts(20 if quick else 50)
        runtime = production_runtime()
        with open(os.devnull, "w") as sink:
            costs = unit_costs(runtime, captured.runtime.telemetry, spans, 2 if quick else 10, sink)
        runtime.shutdown()
        captured.runtime.shutdown()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    rows: list[tuple[str, float, float]] = [
        ("span started and ended", counts["spans"], costs["span"]),
        ("span encoded as OTLP protobuf (export thread)", counts["spans"], costs["encode"]),
        ("JSON log line with trace context", counts["log lines"], costs["log line"]),
        (
            "histogram record into two readers, with exemplar",
            counts["histogram records"],
            costs["metric"],
        ),
        ("counter add (totals read at collection)", counts["counter adds"], costs["count"]),
    ]
    return {
        "rows": rows,
        "floor_us": sum(n * us for _, n, us in rows),
        "render_ms": costs["render"] / 1e3,
    }


def markdown(units: dict[str, Any]) -> str:
    lines = ["| unit | per stream | µs each | µs per stream |", "|---|---|---|---|"]
    lines += [f"| {name} | {n:.1f} | {us:.1f} | {n * us:,.0f} |" for name, n, us in units["rows"]]
    lines.append(f"| **sum** | | | **{units['floor_us']:,.0f}** |")
    lines.append("")
    lines.append(f"`/metrics` rendered in process (no HTTP): {units['render_ms']:.2f} ms")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(measure()))
