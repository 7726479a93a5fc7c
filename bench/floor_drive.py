"""The stock SDK's floor for this service's telemetry contract, without the service.

``bench/ir.py`` counts this program's instructions per "stream" the way it counts the
app's: N iterations, ``(Ir at 60 - Ir at 10) / 50``. One iteration makes exactly the
telemetry units an offline stream makes, with the SDK wired as its documentation shows
and nothing of ours (no app, no facade, no processors, no views): 10 spans with the
stream's attributes (a server span, 5 phases, 3 LLM calls, 1 search call), 10 counter
adds and 20 histogram records with the spec's names and buckets, and 13 JSON log lines
(python-json-logger's default formatter) stamped with the trace and session ids by a
filter. Spans go through a ``BatchSpanProcessor`` (batches of 64, as the service's) and
the OTLP/HTTP exporter to the loopback sink at ``OTEL_EXPORTER_OTLP_ENDPOINT``; metrics
to a Prometheus reader and a periodic OTLP/HTTP reader. So "telemetry at the SDK's floor"
is a comparison of two instruction counts, not an estimate from unit timings.

Usage: python bench/floor_drive.py N  (run by ``python -m bench.ir``)
"""

from __future__ import annotations

import logging
import os
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pythonjsonlogger.orjson import OrjsonFormatter

# The spec's buckets (data, not code: the floor runs none of the service's code).
from app.pipeline.events import PHASES
from otel.metrics import (
    FIRST_EVENT_BUCKETS,
    LLM_LATENCY_BUCKETS,
    PHASE_DURATION_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    SEARCH_LATENCY_BUCKETS,
)
from tests.stream_shape import LLM_PHASES, SEARCH_PHASES

SERVER_ATTRIBUTES: dict[str, str | int] = {
    "url.scheme": "http",
    "server.address": "bench",
    "network.protocol.version": "1.1",
    "url.path": "/api/fit-check/stream",
    "http.request.method": "POST",
    "user_agent.original": "python-httpx/0.28.1",
    "client.address": "127.0.0.1",
    "client.port": 123,
    "http.route": "/api/fit-check/stream",
}


class TraceIds(logging.Filter):
    """The usual way to put trace context on log lines: read the current span."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        record.trace_id = format(span_context.trace_id, "032x")
        record.span_id = format(span_context.span_id, "016x")
        return True


def main(streams: int) -> None:
    endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    resource = Resource.create({"service.name": "fit-check", "service.version": "floor"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), max_export_batch_size=64
        )
    )
    metric_readers = [
        PrometheusMetricReader(),
        PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics")),
    ]
    meter_provider = MeterProvider(resource=resource, metric_readers=metric_readers)
    tracer = tracer_provider.get_tracer("fit_check")
    meter = meter_provider.get_meter("fit_check")
    requests = meter.create_counter("fit_check.requests")
    phase_completions = meter.create_counter("fit_check.phase.completions")
    llm_calls = meter.create_counter("fit_check.llm.calls")
    search_calls = meter.create_counter("fit_check.search.calls")
    seconds = {
        name: meter.create_histogram(name, unit="s", explicit_bucket_boundaries_advisory=buckets)
        for name, buckets in (
            ("fit_check.request.duration", REQUEST_DURATION_BUCKETS),
            ("fit_check.time_to_first_event", FIRST_EVENT_BUCKETS),
            ("fit_check.phase.duration", PHASE_DURATION_BUCKETS),
            ("fit_check.llm.latency", LLM_LATENCY_BUCKETS),
            ("fit_check.search.latency", SEARCH_LATENCY_BUCKETS),
        )
    }
    request_duration = seconds["fit_check.request.duration"]
    first_event = seconds["fit_check.time_to_first_event"]
    phase_duration = seconds["fit_check.phase.duration"]
    llm_latency = seconds["fit_check.llm.latency"]
    search_latency = seconds["fit_check.search.latency"]
    genai_duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    genai_tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        OrjsonFormatter(
            ["levelname", "name", "message", "module", "funcName", "lineno"], timestamp=True
        )
    )
    handler.addFilter(TraceIds())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    log = logging.getLogger("fit_check.telemetry")

    for n in range(streams):
        session = {"session_id": f"floor-{n}"}
        with tracer.start_as_current_span(
            "POST /api/fit-check/stream",
            kind=trace.SpanKind.SERVER,
            attributes={**SERVER_ATTRIBUTES, **session},
        ) as request:
            log.info("Request started", extra={**session, "query_length": 38})
            for phase in PHASES:
                with tracer.start_as_current_span(
                    f"fit_check.phase {phase}", attributes={"fit_check.phase": phase, **session}
                ):
                    log.info("Phase started", extra={**session, "phase": phase})
                    if phase in SEARCH_PHASES:
                        search_attributes = {"fit_check.search.provider": "offline", **session}
                        with tracer.start_as_current_span(
                            "search offline",
                            kind=trace.SpanKind.CLIENT,
                            attributes=search_attributes,
                        ) as search:
                            search.set_attribute("fit_check.search.query_count", 3)
                            search.set_attribute("fit_check.search.result_count", 5)
                        search_calls.add(1, {"provider": "offline", "status": "success"})
                        search_latency.record(0.001, {"provider": "offline"})
                    if phase in LLM_PHASES:
                        genai = {
                            "gen_ai.operation.name": "chat",
                            "gen_ai.provider.name": "offline",
                            "gen_ai.request.model": "offline-analyzer",
                        }
                        with tracer.start_as_current_span(
                            "chat offline-analyzer",
                            kind=trace.SpanKind.CLIENT,
                            attributes={**genai, **session},
                        ) as call:
                            call.set_attribute("gen_ai.response.model", "offline-analyzer")
                            call.set_attribute("gen_ai.response.finish_reasons", ("stop",))
                            call.set_attribute("gen_ai.usage.input_tokens", 272)
                            call.set_attribute("gen_ai.usage.output_tokens", 61)
                        llm_calls.add(1, {"model": "offline-analyzer", "status": "success"})
                        llm_latency.record(0.001, {"model": "offline-analyzer"})
                        genai_duration.record(0.001, genai)
                        genai_tokens.record(272, {**genai, "gen_ai.token.type": "input"})
                        genai_tokens.record(61, {**genai, "gen_ai.token.type": "output"})
                    phase_completions.add(1, {"phase": phase, "status": "success"})
                    phase_duration.record(0.001, {"phase": phase})
                    log.info("Phase completed", extra={**session, "phase": phase})
                    if phase == PHASES[0]:
                        first_event.record(0.001)
            request.set_attribute("http.response.status_code", 200)
            request.set_attribute("fit_check.outcome", "success")
            requests.add(1, {"status": "success"})
            request_duration.record(0.003)
            log.info("Request completed", extra={**session, "status": "success"})
    tracer_provider.shutdown()
    meter_provider.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
