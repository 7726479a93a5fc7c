"""OTLP exporters, chosen by the standard protocol and endpoint variables.

Only built when an endpoint is configured: with none, nothing is pushed and nothing logs
about failed exports. Headers, timeout, compression and certificates are read by the
exporters themselves from the ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

from typing import Literal

from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

Protocol = Literal["grpc", "http/protobuf"]


def _signal_endpoint(
    protocol: Protocol, base: str | None, specific: str | None, path: str
) -> str | None:
    if specific:
        return specific
    if not base:
        return None
    return base if protocol == "grpc" else base.rstrip("/") + path


def otlp_span_exporter(
    protocol: Protocol, base: str | None, specific: str | None
) -> SpanExporter | None:
    endpoint = _signal_endpoint(protocol, base, specific, "/v1/traces")
    if endpoint is None:
        return None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=endpoint)


def otlp_metric_exporter(
    protocol: Protocol, base: str | None, specific: str | None
) -> MetricExporter | None:
    endpoint = _signal_endpoint(protocol, base, specific, "/v1/metrics")
    if endpoint is None:
        return None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=endpoint)
