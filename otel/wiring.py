"""One entry point that builds tracing, metrics and logging; one bounded shutdown.

Nothing here touches the global providers: each call builds its own, so an app factory can
be called many times in one process (tests do) and each app exports only its own data.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from wsgiref.simple_server import WSGIServer

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from otel.content import ContentCapture, ContentRedactor
from otel.exporters import (
    ExporterName,
    chosen,
    describe,
    metric_exporters,
    signal_endpoint,
    span_exporters,
)
from otel.facade import Telemetry
from otel.histograms import LeanHistograms, PeriodicReader, PrometheusReader
from otel.recent_traces import DEFAULT_MAX_BYTES, DEFAULT_MAX_TRACES, RecentTraceStore
from otel.redact import UrlRedactingSpanProcessor
from otel.resource import build_resource
from otel.scrape import exposition_renderer, serve_metrics_port
from otel.spans import SessionIdSpanProcessor

log = logging.getLogger("fit_check.telemetry")
SCOPE = "fit_check"


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """Plain values the composition root takes from the service's settings.

    The settings read the standard ``OTEL_*`` variables; a config built by hand gets these
    defaults, not the environment's (the exporters still read their own variables).
    """

    service_name: str = "fit-check"
    service_version: str = "0.0.0"
    environment: str = "local"
    sdk_disabled: bool = False
    otlp_protocol: Literal["grpc", "http/protobuf"] = "http/protobuf"
    otlp_endpoint: str | None = None
    otlp_traces_endpoint: str | None = None
    otlp_metrics_endpoint: str | None = None
    #: OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER; None when unset.
    traces_exporters: tuple[ExporterName, ...] | None = None
    metrics_exporters: tuple[ExporterName, ...] | None = None
    shutdown_timeout_s: float = 3.0
    capture_content: bool = False
    #: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT (``capture_content`` is the older
    #: switch: true means SPAN_ONLY), and the pattern masked in what is captured.
    content_capture: ContentCapture = "NO_CONTENT"
    content_redact_pattern: str | None = None
    span_batch_size: int = 64
    span_queue_size: int = 2048
    span_processor: Literal["batch", "fastotel"] = "batch"
    #: Without a trace back-end (no OTLP exporter), the spans of this many recent traces,
    #: within this many bytes, are kept in memory for ``/trace/{id}``; 0 keeps none.
    recent_traces: int = DEFAULT_MAX_TRACES
    recent_traces_bytes: int = DEFAULT_MAX_BYTES
    #: OTEL_METRICS_EXEMPLAR_FILTER.
    metrics_exemplar_filter: Literal["trace_based", "always_on", "always_off"] = "trace_based"


@dataclass(slots=True)
class TelemetryRuntime:
    """The facade plus the SDK objects that must be flushed and shut down."""

    telemetry: Telemetry
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    shutdown_timeout_s: float = 3.0
    registry: CollectorRegistry | None = None
    #: Where each signal goes, in words, for the start-up line.
    exports: dict[str, str] = field(default_factory=lambda: {"traces": "none", "metrics": "none"})
    _metrics_server: WSGIServer | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def metrics_port(self) -> int | None:
        """The port ``serve_metrics`` bound, if it was called."""
        return None if self._metrics_server is None else self._metrics_server.server_port

    def serve_metrics(
        self, host: str, port: int, token: str | None = None, unauthorised: bytes = b"{}"
    ) -> int | None:
        """Serve ``/metrics`` on a port of its own (kept off the public one); returns it.

        ``token``, when set, is required there too, as on the public port.
        """
        if self.registry is None:
            return None
        self._metrics_server, bound = serve_metrics_port(
            exposition_renderer(self.registry), host, port, token, unauthorised
        )
        return bound

    def shutdown(self) -> bool:
        """Flush and stop within ``shutdown_timeout_s``; True if everything finished in time.

        The OTLP exporters retry for up to their own timeout and ``force_flush`` ignores its
        argument, so the work runs on a daemon thread that we stop waiting for.
        """
        if self._closed:
            return True
        self._closed = True
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p is not None]
        if not providers:
            return True

        def stop() -> None:
            for provider in providers:
                try:
                    provider.shutdown()
                except Exception:  # telemetry must never take the process down
                    log.warning("Telemetry shutdown failed", exc_info=True)

        worker = threading.Thread(target=stop, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(self.shutdown_timeout_s)
        if worker.is_alive():
            log.warning(
                "Telemetry shutdown gave up after %.1fs; unsent data dropped",
                self.shutdown_timeout_s,
            )
            return False
        return True


_EXEMPLAR_FILTERS: dict[str, type[ExemplarFilter]] = {
    "trace_based": TraceBasedExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
}


def lean_histograms(config: TelemetryConfig) -> LeanHistograms:
    """Where the service's histograms are kept: read by every reader that merges them."""
    return LeanHistograms(
        InstrumentationScope(SCOPE, config.service_version), config.metrics_exemplar_filter
    )


def setup_telemetry(
    config: TelemetryConfig,
    *,
    extra_span_processors: Sequence[SpanProcessor] = (),
    extra_metric_readers: Sequence[MetricReader] = (),
    histograms: LeanHistograms | None = None,
) -> TelemetryRuntime:
    """Build providers, readers and exporters for one app.

    ``extra_*`` let tests attach in-memory exporters and readers to the real wiring; a
    reader given there sees the histograms if it merges ``histograms`` (made here if not
    given, ``otel.histograms.InMemoryReader``).
    """
    if config.sdk_disabled:
        return TelemetryRuntime(
            telemetry=Telemetry(
                tracer=trace.NoOpTracer(),
                meter=metrics.NoOpMeter(SCOPE),
                service_version=config.service_version,
            )
        )

    resource = build_resource(
        service_name=config.service_name,
        service_version=config.service_version,
        environment=config.environment,
    )

    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(SessionIdSpanProcessor())
    tracer_provider.add_span_processor(UrlRedactingSpanProcessor())
    for processor in extra_span_processors:
        tracer_provider.add_span_processor(processor)
    protocol = config.otlp_protocol
    traces_endpoint = signal_endpoint(
        protocol, config.otlp_endpoint, config.otlp_traces_endpoint, "/v1/traces"
    )
    trace_exports = chosen(config.traces_exporters, traces_endpoint)
    native = (
        native_span_processor(config, protocol, traces_endpoint)
        if "otlp" in trace_exports and config.span_processor == "fastotel"
        else None
    )
    batched = trace_exports
    if native is not None:  # it sends the OTLP spans; any other exporter stays batched
        tracer_provider.add_span_processor(native)
        batched = tuple(name for name in trace_exports if name != "otlp")
    for span_exporter in span_exporters(batched, protocol, traces_endpoint):
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                span_exporter,
                max_queue_size=config.span_queue_size,
                max_export_batch_size=min(config.span_batch_size, config.span_queue_size),
            )
        )
    # No back-end to read traces from: the recent ones are kept here. Added after the
    # redacting processors, so it sees each span as an exporter would.
    recent = None
    if "otlp" not in trace_exports and config.recent_traces > 0:
        recent = RecentTraceStore(config.recent_traces, config.recent_traces_bytes)
        tracer_provider.add_span_processor(recent)

    if histograms is None:
        histograms = lean_histograms(config)
    registry = CollectorRegistry(auto_describe=True)
    readers: list[MetricReader] = [
        PrometheusReader(histograms, scope_info_enabled=False, registry=registry),
        *extra_metric_readers,
    ]
    metrics_endpoint = signal_endpoint(
        protocol, config.otlp_endpoint, config.otlp_metrics_endpoint, "/v1/metrics"
    )
    metric_exports = chosen(config.metrics_exporters, metrics_endpoint)
    for metric_exporter in metric_exporters(metric_exports, protocol, metrics_endpoint):
        readers.append(PeriodicReader(histograms, metric_exporter))
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=readers,
        exemplar_filter=_EXEMPLAR_FILTERS[config.metrics_exemplar_filter](),
        shutdown_on_exit=False,
    )

    telemetry = Telemetry(
        tracer=tracer_provider.get_tracer(SCOPE, config.service_version),
        meter=meter_provider.get_meter(SCOPE, config.service_version),
        service_version=config.service_version,
        render_metrics=exposition_renderer(registry),
        capture_content=config.capture_content,
        content_capture=config.content_capture,
        redactor=ContentRedactor(config.content_redact_pattern),
        recent_traces=recent,
        histograms=histograms,
    )
    return TelemetryRuntime(
        telemetry=telemetry,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        shutdown_timeout_s=config.shutdown_timeout_s,
        registry=registry,
        exports={
            "traces": with_recent(
                describe(trace_exports, protocol, traces_endpoint, "traces")
                + (" (fastotel)" if native is not None else ""),
                recent,
            ),
            "metrics": describe(metric_exports, protocol, metrics_endpoint, "metrics"),
        },
    )


def with_recent(exports: str, recent: RecentTraceStore | None) -> str:
    """Where traces go, in words, with the in-memory store when there is one."""
    if recent is None:
        return exports
    kept = (
        f"memory (/trace/{{id}}: the last {recent.max_traces} traces, "
        f"at most {recent.max_bytes / 2**20:g} MiB)"
    )
    return kept if exports == "none" else f"{exports}, {kept}"


def native_span_processor(
    config: TelemetryConfig, protocol: str, endpoint: str | None
) -> SpanProcessor | None:
    """fastotel's processor for the OTLP span export, or None (with a warning) when it
    cannot serve it: the stock ``BatchSpanProcessor`` then does, so a wrong setting costs
    speed, never spans.

    Same batch and queue sizes as the stock pipeline; its shutdown waits in native code,
    so it is bounded by ours rather than by its 30 s default.
    """
    if protocol != "http/protobuf":
        log.warning(
            "fastotel speaks OTLP/HTTP only; spans over %s use BatchSpanProcessor", protocol
        )
        return None
    try:
        from fastotel import OTLPSpanProcessor
    except ImportError:
        log.warning(
            "FIT_CHECK_SPAN_PROCESSOR=fastotel but fastotel is not installed "
            "(pip install 'fit-check[fastotel]'); spans use BatchSpanProcessor"
        )
        return None
    processor: SpanProcessor = OTLPSpanProcessor(
        endpoint=endpoint,  # None: the OTLP default, read by fastotel as by OTLPSpanExporter
        max_queue_size=config.span_queue_size,
        max_export_batch_size=min(config.span_batch_size, config.span_queue_size),
        export_timeout_millis=config.shutdown_timeout_s * 1000,
    )
    return processor
