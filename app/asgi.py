"""Composition root: the one module that knows both the service and the telemetry wiring.

``uvicorn app.asgi:build --factory`` (what ``fit-check serve`` runs) reads the settings
from the environment, sets up logging and telemetry, and builds the app.
"""

from __future__ import annotations

import gc

from fastapi import FastAPI

from app import __version__
from app.config import Settings
from app.main import create_app
from app.providers.factory import Providers
from app.server import DrainingServer, server_config
from app.service import FitCheckService
from otel.instrument import instrument_app
from otel.logging import configure_logging
from otel.setup import TelemetryConfig, TelemetryRuntime, setup_telemetry


def telemetry_config(settings: Settings) -> TelemetryConfig:
    return TelemetryConfig(
        service_name=settings.otel_service_name,
        service_version=__version__,
        environment=settings.environment,
        sdk_disabled=settings.otel_sdk_disabled,
        otlp_protocol=settings.otlp_protocol,
        otlp_endpoint=settings.otlp_endpoint,
        otlp_traces_endpoint=settings.otlp_traces_endpoint,
        otlp_metrics_endpoint=settings.otlp_metrics_endpoint,
        capture_content=settings.capture_content,
        span_batch_size=settings.span_batch_size,
        span_queue_size=settings.span_queue_size,
    )


def build_app(
    settings: Settings, runtime: TelemetryRuntime, providers: Providers | None = None
) -> FastAPI:
    """Wire an app to an already built telemetry runtime (tests pass in-memory ones)."""
    if settings.metrics_port is not None:
        runtime.serve_metrics(settings.metrics_host, settings.metrics_port, settings.metrics_token)
    app = create_app(
        settings, runtime.telemetry, providers=providers, on_shutdown=[runtime.shutdown]
    )
    service: FitCheckService = app.state.service
    instrument_app(
        app,
        runtime.tracer_provider,
        trust_incoming_trace=settings.trust_incoming_trace,
        resume_parent=service.resume_trace_parent,
    )
    return app


def build(settings: Settings | None = None) -> FastAPI:
    """The uvicorn factory: everything from the environment."""
    settings = settings or Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    runtime = setup_telemetry(telemetry_config(settings))
    app = build_app(settings, runtime)
    # Everything built so far lives as long as the process: move it out of the collector's
    # way, so full collections under load walk only per-request objects.
    gc.collect()
    gc.freeze()
    return app


def build_server(settings: Settings | None = None) -> DrainingServer:
    """What ``fit-check serve`` runs: the app behind uvicorn with limits and a drain.

    (``uvicorn app.asgi:build --factory`` serves the same app without them.)
    """
    settings = settings or Settings()
    app = build(settings)
    service: FitCheckService = app.state.service
    config = server_config(
        app,
        host=settings.host,
        port=settings.port,
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        on_reject=service.telemetry.rejected,
    )
    return DrainingServer(config, drain=service.drain)
