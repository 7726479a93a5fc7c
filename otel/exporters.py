"""Span and metric exporters, chosen by the standard ``OTEL_*`` variables.

``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER`` take a comma-separated list of
``otlp``, ``console`` and ``none``, as the OpenTelemetry specification defines them. One
difference, on purpose: when the variable is unset, ``otlp`` is used only if an OTLP
endpoint is configured, so ``make run`` on a laptop pushes nothing and logs no failed
export to a collector that is not there. Setting ``otlp`` explicitly without an endpoint
uses the specification's default (``http://localhost:4318``, or ``:4317`` for gRPC).

Headers, timeout, compression and certificates are read by the OTLP exporters themselves
from the ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter
from opentelemetry.sdk.metrics.export import MetricsData as _MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

Protocol = Literal["grpc", "http/protobuf"]
E = TypeVar("E")
ExporterName = Literal["otlp", "console", "none"]
DEFAULT_ENDPOINTS: dict[Protocol, str] = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318",
}


def chosen(
    exporters: Sequence[ExporterName] | None, endpoint: str | None
) -> tuple[ExporterName, ...]:
    """The exporters to build: as listed (``none`` builds nothing), or, unset, OTLP when an
    endpoint is configured."""
    if exporters is None:
        return ("otlp",) if endpoint else ()
    return tuple(dict.fromkeys(name for name in exporters if name != "none"))


def signal_endpoint(
    protocol: Protocol, base: str | None, specific: str | None, path: str
) -> str | None:
    """The endpoint of one signal: its own variable, else the base one plus the signal's
    path (for OTLP/HTTP), else None."""
    if specific:
        return specific
    if not base:
        return None
    return base if protocol == "grpc" else base.rstrip("/") + path


def span_exporters(
    names: Sequence[ExporterName], protocol: Protocol, endpoint: str | None
) -> list[SpanExporter]:
    return _build(
        names,
        console=lambda: ConsoleSpanExporter(out=sys.stdout, formatter=_span_line),
        otlp=lambda: _otlp_span_exporter(protocol, endpoint or _default(protocol, "traces")),
    )


def metric_exporters(
    names: Sequence[ExporterName], protocol: Protocol, endpoint: str | None
) -> list[MetricExporter]:
    return _build(
        names,
        console=lambda: ConsoleMetricExporter(out=sys.stdout, formatter=_metrics_line),
        otlp=lambda: _otlp_metric_exporter(protocol, endpoint or _default(protocol, "metrics")),
    )


def _build(
    names: Sequence[ExporterName], *, console: Callable[[], E], otlp: Callable[[], E]
) -> list[E]:
    factories = {"console": console, "otlp": otlp}
    return [factories[name]() for name in names if name in factories]


def describe(
    names: Sequence[ExporterName], protocol: Protocol, endpoint: str | None, signal: str
) -> str:
    """For the start-up line: ``otlp http://collector:4318/v1/traces, console`` or ``none``."""
    parts = [
        f"otlp {endpoint or _default(protocol, signal)}" if name == "otlp" else name
        for name in names
    ]
    return ", ".join(parts) or "none"


def _default(protocol: Protocol, signal: str) -> str:
    base = DEFAULT_ENDPOINTS[protocol]
    return base if protocol == "grpc" else f"{base}/v1/{signal}"


def _span_line(span: ReadableSpan) -> str:
    """One span, one JSON line: readable with ``jq``, and it never splits a log line."""
    line: str = span.to_json(indent=None)
    return line + os.linesep


def _metrics_line(data: _MetricsData) -> str:
    line: str = data.to_json(indent=None)
    return line + os.linesep


def _otlp_span_exporter(protocol: Protocol, endpoint: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=endpoint)


def _otlp_metric_exporter(protocol: Protocol, endpoint: str) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=endpoint)
