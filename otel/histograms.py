"""Histograms kept as plain bucket counts, merged into what each metric reader collects.

The SDK's ``Histogram.record`` runs its whole measurement path once per metric reader: an
exemplar filter, a lookup of the reader's storage and view, the attributes hashed again,
a lock and a reservoir in each. The service has two readers (Prometheus for ``/metrics``
and the OTLP push) and records a score of histogram values a stream, which made the
histograms the largest share of the telemetry's cost (docs/performance.md). Here a record
is a bisect and a few additions under one lock, once, whatever the number of readers;
each reader merges the points into its collection, so the exported histograms are the
SDK's own data model, with the same names, buckets, exemplars and temporality.

This is ``otel.metrics.Totals`` for histograms, with one difference: the SDK has no
observable histogram, so the points join a collection in the readers' ``_receive_metrics``,
the method the SDK asks every reader to implement. The readers below override it and
nothing else; ``tests/otel/test_histograms.py`` fails loudly if an SDK upgrade changes
what that relies on (``_receive_metrics`` and the reader's temporality table).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from math import inf
from time import time_ns
from typing import Any, Literal

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import get_current_span
from opentelemetry.util.types import AttributeValue

#: ``OTEL_METRICS_EXEMPLAR_FILTER``'s values, as the SDK reads them.
ExemplarFilter = Literal["trace_based", "always_on", "always_off"]

_Key = frozenset[tuple[str, AttributeValue]]


@dataclass(slots=True)
class _Point:
    start_ns: int
    counts: list[int]
    count: int = 0
    sum: float = 0.0
    min: float = inf
    max: float = -inf
    #: The latest exemplar of each bucket (the SDK's aligned-bucket reservoir keeps the same).
    exemplars: list[Exemplar | None] = field(default_factory=list)


@dataclass(slots=True)
class _Seen:
    """What one reader was last given of one point: a delta reader gets the difference."""

    time_ns: int
    counts: list[int]
    count: int
    sum: float


class LeanHistogram:
    """One histogram instrument; ``record`` has the signature of the SDK's."""

    __slots__ = ("_bounds", "_exemplars", "_lock", "_points", "description", "name", "unit")

    def __init__(
        self,
        name: str,
        *,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        exemplars: ExemplarFilter,
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._bounds = tuple(float(bound) for bound in boundaries)
        self._exemplars = exemplars
        self._points: dict[_Key, _Point] = {}
        self._lock = threading.Lock()

    def record(self, amount: float, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        key: _Key = frozenset(attributes.items()) if attributes else frozenset()
        bucket = bisect_left(self._bounds, amount)
        exemplar = self._exemplar(amount) if self._exemplars != "always_off" else None
        with self._lock:
            point = self._points.get(key)
            if point is None:
                size = len(self._bounds) + 1
                point = self._points[key] = _Point(time_ns(), [0] * size, exemplars=[None] * size)
            point.counts[bucket] += 1
            point.count += 1
            point.sum += amount
            if amount < point.min:
                point.min = amount
            if amount > point.max:
                point.max = amount
            if exemplar is not None:
                point.exemplars[bucket] = exemplar

    def _exemplar(self, amount: float) -> Exemplar | None:
        span_context = get_current_span().get_span_context()
        if self._exemplars == "trace_based" and not span_context.trace_flags.sampled:
            return None
        ids = span_context.is_valid
        return Exemplar(
            {},
            amount,
            time_ns(),
            span_context.span_id if ids else None,
            span_context.trace_id if ids else None,
        )

    def metric(self, seen: dict[_Key, _Seen], now_ns: int, delta: bool) -> Metric | None:
        """The histogram as one reader collects it now; ``seen`` is that reader's memory."""
        with self._lock:
            points = [
                (key, replace(point, counts=list(point.counts), exemplars=list(point.exemplars)))
                for key, point in self._points.items()
            ]
        if not points:
            return None
        data_points = []
        for key, point in points:
            start_ns, counts, count, total = point.start_ns, point.counts, point.count, point.sum
            low, high = point.min, point.max
            before = seen.get(key)
            since = before.time_ns if before is not None else 0
            seen[key] = _Seen(now_ns, counts, count, total)
            kept = [ex for ex in point.exemplars if ex is not None and ex.time_unix_nano > since]
            if delta and before is not None:
                start_ns = before.time_ns
                counts = [now - then for now, then in zip(counts, before.counts, strict=True)]
                count -= before.count
                total -= before.sum
                # The interval's extremes are not kept: the SDK's own "not recorded".
                low, high = inf, -inf
            data_points.append(
                HistogramDataPoint(
                    attributes=dict(key),
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    count=count,
                    sum=total,
                    bucket_counts=counts,
                    explicit_bounds=self._bounds,
                    min=low,
                    max=high,
                    exemplars=kept,
                )
            )
        temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=data_points, aggregation_temporality=temporality),
        )


class LeanHistograms:
    """The lean histograms of one meter, and what each reader has been given of them."""

    def __init__(self, scope: InstrumentationScope, exemplars: ExemplarFilter) -> None:
        self._scope = scope
        self._exemplars = exemplars
        self._histograms: list[LeanHistogram] = []
        self._seen: dict[int, dict[str, dict[_Key, _Seen]]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        name: str,
        *,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        exemplars: bool = True,
    ) -> LeanHistogram:
        histogram = LeanHistogram(
            name,
            unit=unit,
            description=description,
            boundaries=boundaries,
            exemplars=self._exemplars if exemplars else "always_off",
        )
        self._histograms.append(histogram)
        return histogram

    def merged(self, data: MetricsData | None, reader: MetricReader) -> MetricsData | None:
        """``data`` with the histograms added to this meter's scope, for ``reader``."""
        now_ns = time_ns()
        delta = _histogram_temporality(reader) is AggregationTemporality.DELTA
        with self._lock:  # two collections of one reader never interleave their memory
            seen = self._seen.setdefault(id(reader), {})
            ours = [
                metric
                for histogram in self._histograms
                if (metric := histogram.metric(seen.setdefault(histogram.name, {}), now_ns, delta))
                is not None
            ]
        # No data at all: the meter made no instrument, so it has no histogram either.
        if not ours or data is None or not data.resource_metrics:
            return data
        resources = list(data.resource_metrics)
        first = resources[0]
        scopes = list(first.scope_metrics)
        for index, scope_metrics in enumerate(scopes):
            if scope_metrics.scope.name == self._scope.name:
                scopes[index] = replace(scope_metrics, metrics=[*scope_metrics.metrics, *ours])
                break
        else:
            scopes.append(ScopeMetrics(self._scope, ours, self._scope.schema_url or ""))
        resources[0] = replace(first, scope_metrics=scopes)
        return MetricsData(resource_metrics=resources)


def _histogram_temporality(reader: MetricReader) -> AggregationTemporality:
    """The temporality ``reader`` asked for histograms (``OTEL_EXPORTER_OTLP_METRICS_
    TEMPORALITY_PREFERENCE``, or its exporter's choice): the SDK keeps it in the reader."""
    table = reader._instrument_class_temporality
    chosen = (temporality for kind, temporality in table.items() if issubclass(kind, SdkHistogram))
    return next(chosen, AggregationTemporality.CUMULATIVE)


class _MergingReader(MetricReader):
    """A metric reader that adds the lean histograms to each collection it receives."""

    def __init__(self, histograms: LeanHistograms, *args: Any, **kwargs: Any) -> None:
        self._lean = histograms
        super().__init__(*args, **kwargs)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        merged = self._lean.merged(metrics_data, self)
        super()._receive_metrics(merged, timeout_millis, **kwargs)  # type: ignore[arg-type,safe-super]


class PrometheusReader(_MergingReader, PrometheusMetricReader):
    """The ``/metrics`` reader, with the lean histograms."""


class PeriodicReader(_MergingReader, PeriodicExportingMetricReader):
    """The OTLP push, with the lean histograms."""


class InMemoryReader(_MergingReader, InMemoryMetricReader):
    """What tests read, with the lean histograms, as an exporter would see them."""
