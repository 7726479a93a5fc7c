"""The lean histograms export what the SDK's own histogram would, to every reader."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

from otel.histograms import (
    InMemoryReader,
    LeanHistograms,
    PeriodicReader,
    PrometheusReader,
)

BUCKETS = (0.1, 0.5, 1.0, 5.0)
VALUES = (0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 2.0, 9.0)
SCOPE = InstrumentationScope("fit_check", "1.0")


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[Metric, HistogramDataPoint]]:
    data = reader.get_metrics_data()
    assert data is not None
    found = []
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        found.append((metric, point))
    return found


def wired(*readers: MetricReader) -> MeterProvider:
    """A provider with one synchronous counter, so that every collection has a scope."""
    provider = MeterProvider(metric_readers=list(readers))
    provider.get_meter(SCOPE.name, SCOPE.version).create_counter("fit_check.anything").add(1)
    return provider


@pytest.fixture
def book() -> Iterator[LeanHistograms]:
    yield LeanHistograms(SCOPE, "trace_based")


def test_a_point_is_the_one_the_sdk_makes_of_the_same_values(book: LeanHistograms) -> None:
    sdk_reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[sdk_reader]).get_meter("sdk")
    theirs = sdk.create_histogram("h", unit="s", explicit_bucket_boundaries_advisory=BUCKETS)
    ours_reader = InMemoryReader(book)
    wired(ours_reader)
    ours = book.create("h", unit="s", description="d", boundaries=BUCKETS)
    for value in VALUES:
        theirs.record(value, {"model": "m"})
        ours.record(value, {"model": "m"})

    [(_, expected)] = points(sdk_reader, "h")
    [(metric, got)] = points(ours_reader, "h")

    assert (metric.unit, metric.description) == ("s", "d")
    assert isinstance(metric.data, HistogramData)
    assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert got.attributes == {"model": "m"}
    assert list(got.bucket_counts) == list(expected.bucket_counts) == [2, 2, 2, 1, 1]
    assert tuple(got.explicit_bounds) == BUCKETS
    assert (got.count, got.sum, got.min, got.max) == (
        expected.count,
        expected.sum,
        expected.min,
        expected.max,
    )


def test_each_attribute_set_is_a_point_of_its_own(book: LeanHistograms) -> None:
    reader = InMemoryReader(book)
    wired(reader)
    histogram = book.create("h", unit="s", description="d", boundaries=BUCKETS)
    histogram.record(1.0, {"model": "a"})
    histogram.record(2.0, {"model": "b"})
    histogram.record(3.0, {"model": "b"})
    histogram.record(4.0)

    counts = {
        tuple(sorted(point.attributes.items())): point.count
        for _, point in points(reader, "h")
        if point.attributes is not None
    }
    assert counts == {(("model", "a"),): 1, (("model", "b"),): 2, (): 1}


def test_every_reader_gets_every_record_and_each_exemplar_once(book: LeanHistograms) -> None:
    first, second = InMemoryReader(book), InMemoryReader(book)
    wired(first, second)
    duration = book.create("duration", unit="s", description="d", boundaries=BUCKETS)
    tokens = book.create(
        "tokens", unit="{token}", description="t", boundaries=BUCKETS, exemplars=False
    )
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("sampled") as span:
        duration.record(0.3)
        tokens.record(3)
    duration.record(0.4)  # no span: no exemplar

    for reader in (first, second):
        [(_, point)] = points(reader, "duration")
        assert point.count == 2
        [exemplar] = point.exemplars
        assert exemplar.trace_id == span.get_span_context().trace_id
        assert exemplar.span_id == span.get_span_context().span_id
        assert exemplar.value == 0.3
        [(_, token_point)] = points(reader, "tokens")
        assert token_point.exemplars == []
    # The next collection still counts everything, but the exemplar was given already.
    [(_, again)] = points(first, "duration")
    assert again.count == 2
    assert again.exemplars == []


def test_exemplars_follow_the_filter() -> None:
    kept_nowhere = LeanHistograms(SCOPE, "always_off")
    kept_always = LeanHistograms(SCOPE, "always_on")
    off, on = InMemoryReader(kept_nowhere), InMemoryReader(kept_always)
    wired(off)
    wired(on)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("sampled"):
        kept_nowhere.create("h", unit="s", description="d", boundaries=BUCKETS).record(1.0)
    kept_always.create("h", unit="s", description="d", boundaries=BUCKETS).record(1.0)

    [(_, nothing)] = points(off, "h")
    [(_, outside_a_span)] = points(on, "h")
    assert nothing.exemplars == []
    [exemplar] = outside_a_span.exemplars
    assert exemplar.trace_id is None


class _Kept(MetricExporter):
    def __init__(self) -> None:
        super().__init__(preferred_temporality={SdkHistogram: AggregationTemporality.DELTA})
        self.batches: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: object
    ) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: object) -> None:
        return None


def test_a_push_that_asks_for_deltas_gets_each_interval_once(book: LeanHistograms) -> None:
    exporter = _Kept()
    # A long interval: only the explicit flushes below export.
    pushed = PeriodicReader(book, exporter, export_interval_millis=3_600_000)
    provider = wired(pushed)
    histogram = book.create("h", unit="s", description="d", boundaries=BUCKETS)
    histogram.record(0.3)
    histogram.record(0.7)
    pushed.force_flush()
    histogram.record(2.0)
    pushed.force_flush()
    provider.shutdown()

    intervals = []
    for batch in exporter.batches[:2]:
        [metric] = [
            metric
            for scope in batch.resource_metrics[0].scope_metrics
            for metric in scope.metrics
            if metric.name == "h"
        ]
        assert isinstance(metric.data, HistogramData)
        assert metric.data.aggregation_temporality is AggregationTemporality.DELTA
        [point] = metric.data.data_points
        assert isinstance(point, HistogramDataPoint)
        intervals.append(point)
    first, second = intervals
    assert (first.count, first.sum, list(first.bucket_counts)) == (2, 1.0, [0, 1, 1, 0, 0])
    assert (second.count, second.sum, list(second.bucket_counts)) == (1, 2.0, [0, 0, 0, 1, 0])
    assert second.start_time_unix_nano == first.time_unix_nano


def test_the_prometheus_exposition_has_the_buckets(book: LeanHistograms) -> None:
    registry = CollectorRegistry(auto_describe=True)
    wired(PrometheusReader(book, scope_info_enabled=False, registry=registry))
    histogram = book.create(
        "fit_check.request.duration", unit="s", description="d", boundaries=BUCKETS
    )
    histogram.record(0.3, {"model": "m"})

    text = generate_latest(registry).decode()

    assert 'fit_check_request_duration_seconds_bucket{le="0.5",model="m"} 1.0' in text
    assert 'fit_check_request_duration_seconds_bucket{le="0.1",model="m"} 0.0' in text
    assert 'fit_check_request_duration_seconds_count{model="m"} 1.0' in text


def test_a_collection_without_a_histogram_is_left_as_it_is(book: LeanHistograms) -> None:
    reader = InMemoryReader(book)
    wired(reader)
    book.create("never recorded", unit="s", description="d", boundaries=BUCKETS)

    assert points(reader, "never recorded") == []
    assert reader.get_metrics_data() is not None
