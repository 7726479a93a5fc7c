"""In-memory telemetry for tests: the real wiring plus an exporter and a reader to look at."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import (
    DataPointT,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.histograms import InMemoryReader
from otel.wiring import TelemetryConfig, TelemetryRuntime, lean_histograms, setup_telemetry


class OpenSpanCounter(SpanProcessor):
    """Counts spans started and not yet ended: a leak detector for cancellation paths."""

    def __init__(self) -> None:
        self.open = 0
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        with self._lock:
            self.open += 1

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.open -= 1


@dataclass(slots=True)
class CapturedTelemetry:
    runtime: TelemetryRuntime
    spans: InMemorySpanExporter
    metrics: InMemoryReader
    open_spans: OpenSpanCounter

    def finished_spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.spans.get_finished_spans())

    def metric_points(self) -> Iterator[tuple[Metric, DataPointT]]:
        """Every (metric, data point) collected right now."""
        data = self.metrics.get_metrics_data()
        if data is None:
            return
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    for point in metric.data.data_points:
                        yield metric, point

    def value(self, name: str, **attributes: str) -> float:
        """Sum (or gauge value, or histogram count) of ``name`` at exactly these attributes."""
        total = 0.0
        for metric, point in self.metric_points():
            if metric.name == name and dict(point.attributes or {}) == attributes:
                total += point.value if isinstance(point, NumberDataPoint) else point.count
        return total


def captured_telemetry(config: TelemetryConfig | None = None) -> CapturedTelemetry:
    config = config or TelemetryConfig()
    spans = InMemorySpanExporter()
    histograms = lean_histograms(config)
    reader = InMemoryReader(histograms)
    counter = OpenSpanCounter()
    runtime = setup_telemetry(
        config,
        extra_span_processors=[counter, SimpleSpanProcessor(spans)],
        extra_metric_readers=[reader],
        histograms=histograms,
    )
    return CapturedTelemetry(runtime=runtime, spans=spans, metrics=reader, open_spans=counter)
