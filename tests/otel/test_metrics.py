"""Counters kept as totals: what a reader collects, however the attributes are ordered."""

from __future__ import annotations

import threading

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, Sum
from opentelemetry.util.types import AnyValue

from otel.metrics import Totals

Points = dict[frozenset[tuple[str, AnyValue]], float]


def collected(reader: InMemoryMetricReader) -> tuple[Metric, Points]:
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert isinstance(metric.data, Sum)
    points: Points = {
        frozenset((point.attributes or {}).items()): point.value
        for point in metric.data.data_points
    }
    return metric, points


def test_totals_export_a_monotonic_cumulative_counter() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    calls = Totals(meter, "fit_check.llm.calls", description="LLM calls")
    calls.add(0, {"model": "m", "status": "error"})
    calls.add(1, {"model": "m", "status": "success"})
    calls.add(1, {"status": "success", "model": "m"})
    metric, points = collected(reader)
    assert isinstance(metric.data, Sum) and metric.data.is_monotonic
    assert (metric.name, metric.description) == ("fit_check.llm.calls", "LLM calls")
    assert points == {
        frozenset({("model", "m"), ("status", "success")}): 2,
        frozenset({("model", "m"), ("status", "error")}): 0,
    }
    calls.add(1, {"model": "m", "status": "error"})
    _, points = collected(reader)
    assert points[frozenset({("model", "m"), ("status", "error")})] == 1
    assert points[frozenset({("model", "m"), ("status", "success")})] == 2


def test_totals_lose_no_count_to_threads_adding_and_a_reader_collecting() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    requests = Totals(meter, "fit_check.requests", description="requests")
    threads, adds = 4, 50_000

    def add() -> None:
        for n in range(adds):
            requests.add(1, {"status": ("success", "error")[n % 2]})

    adders = [threading.Thread(target=add) for _ in range(threads)]
    for adder in adders:
        adder.start()
    while any(adder.is_alive() for adder in adders):
        reader.get_metrics_data()
    _, points = collected(reader)
    assert sum(points.values()) == threads * adds
