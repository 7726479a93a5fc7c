"""Composition root: the one module that knows both the service and the telemetry wiring.

``build_app`` assembles one app: providers, the service, the HTTP app around it and the
telemetry around that; ``asgi_stack`` lists its whole ASGI stack, outermost first.
``uvicorn app.asgi:build --factory`` (what ``fit-check serve`` runs) reads the settings
from the environment, sets up logging and telemetry, and builds the app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp

from app import __version__
from app.api.demo import demo_router, redoc_router, static_files, trace_router
from app.api.direct_send import ServerSendInScope
from app.api.errors import install_error_handlers
from app.api.head import HeadAsGet
from app.api.limits import BodySizeLimit, JsonBodiesOnly
from app.api.origins import JsonCORSMiddleware, OriginGate
from app.api.routes import router, stream_get
from app.api.schemas import document_sse_events
from app.config import Settings
from app.http_server import DrainingServer, server_config
from app.models import error_json
from app.providers.factory import Providers, build_providers
from app.service import FitCheckService
from app.startup import announce
from app.workers import Supervisor, worker_log_file
from otel.http_client import trace_http_client
from otel.instrumentation import (
    ExceptionsOnSpan,
    IncomingTraceGate,
    instrument_redis,
    server_spans,
)
from otel.log_lines import configure_logging
from otel.wiring import TelemetryConfig, TelemetryRuntime, setup_telemetry

SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


#: ``TelemetryConfig`` fields whose setting has another name (the standard variable's).
_SETTING_OF = {"service_name": "otel_service_name", "sdk_disabled": "otel_sdk_disabled"}
#: ``TelemetryConfig`` fields that are not settings.
_NOT_SETTINGS = frozenset({"service_version", "shutdown_timeout_s"})


def telemetry_config(settings: Settings) -> TelemetryConfig:
    """The telemetry's plain values, each read from the setting of the same name: a
    setting added to ``TelemetryConfig`` needs no line here (and a test checks every one
    has its setting)."""
    values: dict[str, Any] = {
        field.name: getattr(settings, _SETTING_OF.get(field.name, field.name))
        for field in dataclasses.fields(TelemetryConfig)
        if field.name not in _NOT_SETTINGS
    }
    return TelemetryConfig(service_version=__version__, **values)


def build_app(
    settings: Settings, runtime: TelemetryRuntime, providers: Providers | None = None
) -> FastAPI:
    """One independent app wired to an already built telemetry runtime (tests pass
    in-memory ones). Call it as often as you like: the one process-wide thing it touches is
    a default for the HTTP semantic conventions, read by the instrumentations once."""
    # The stable HTTP semantic conventions (url.path, url.query, http.request.method, ...)
    # unless the user chose otherwise. The instrumentations read this variable once per
    # process, when the first of them is set up: here, before any.
    os.environ.setdefault(SEMCONV_OPT_IN, "http")
    telemetry = runtime.telemetry
    if providers is None:
        tracer_provider = runtime.tracer_provider
        if "httpx" in settings.disabled_instrumentations:
            tracer_provider = None

        def trace_http(client: httpx.AsyncClient) -> None:
            if tracer_provider is not None:
                trace_http_client(client, tracer_provider)

        providers = build_providers(settings, trace_http)
    service = FitCheckService.build(settings, telemetry, providers)
    if settings.metrics_port is not None:
        runtime.serve_metrics(
            settings.metrics_host,
            settings.metrics_port,
            settings.metrics_token,
            unauthorised=error_json("UNAUTHORIZED", "metrics need a bearer token"),
        )

    if service.store is not None:
        instrument_redis(service.store.client, runtime.tracer_provider)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        announce(settings, providers.llm.model, runtime.exports)
        watch = asyncio.create_task(service.watch_store(), name="watch the session store")
        try:
            yield
        finally:
            watch.cancel()
            await service.close_store()
            await service.providers.aclose()
            runtime.shutdown()

    # FastAPIOffline: /docs and /redoc serve their JavaScript and CSS from the package, so
    # they work with no internet (FastAPI's own pages load them from a CDN).
    app = FastAPIOffline(
        redoc_url=None,  # ours, below: the same page without the CDN logo
        title="fit-check",
        version=__version__,
        description="Streams an 'is this engineer a fit for you?' analysis over SSE.",
        lifespan=lifespan,
        # FastAPI's own telemetry would put a server span in any global provider (such as
        # opentelemetry-instrument sets) and make ours its child, exported without its root.
        # otel/ provides all of this service's telemetry.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Starlette's trailing-slash redirect builds its Location from the Host header:
        # a client-chosen host in a redirect. A wrong path is a plain 404 instead.
        redirect_slashes=False,
    )
    app.state.service = service
    # HEAD is answered as GET on every GET route but those that start work (the stream).
    get_only = {
        r.path for r in router.routes if isinstance(r, APIRoute) and r.endpoint is stream_get
    }
    install_error_handlers(app, service.reject, get_only=get_only)
    app.include_router(router)
    # Traces kept in memory (no back-end configured) are shown by this service's own
    # /trace/{id}; otherwise the demo page links to Jaeger's UI.
    recent_traces = telemetry.recent_traces
    app.include_router(
        demo_router(
            trace_ui_url="" if recent_traces is not None else settings.jaeger_ui_url,
            grafana_url=settings.grafana_url,
            logs_ui_url=settings.logs_ui_url,
        )
    )
    app.include_router(redoc_router(app.title))
    app.include_router(trace_router(settings.jaeger_url, recent_traces))
    app.mount("/static", static_files(), name="static")
    document_sse_events(app)
    asgi_stack(app, settings, service, runtime, get_only=get_only)
    return app


def asgi_stack(
    app: FastAPI,
    settings: Settings,
    service: FitCheckService,
    runtime: TelemetryRuntime,
    *,
    get_only: set[str],
) -> None:
    """The app's whole ASGI stack, outermost first: the one place it is put together.
    Starlette builds it on the app's first call; tests/app/test_asgi_stack.py pins it."""
    starlette_stack = app.build_middleware_stack
    tracer_provider = runtime.tracer_provider

    def stack() -> ASGIApp:
        starlette = starlette_stack()  # ServerErrorMiddleware -> ... -> routes (below)
        if not isinstance(starlette, ServerErrorMiddleware):
            raise TypeError(f"Starlette's stack starts with {type(starlette).__name__}")
        if tracer_provider is None:  # OTEL_SDK_DISABLED: no server span, nor its parent
            return ServerSendInScope(starlette)
        # The server's own send, for SSE body frames (app/api/direct_send.py).
        return ServerSendInScope(
            # The span's parent, chosen before the span reads the headers.
            IncomingTraceGate(
                # A failure of the span's own middleware is still a 500.
                ServerErrorMiddleware(
                    server_spans(
                        # Starlette's error middleware inside the span: the span records
                        # the exception and the 500 before it ends.
                        ServerErrorMiddleware(
                            ExceptionsOnSpan(starlette.app),
                            handler=starlette.handler,
                            debug=starlette.debug,
                        ),
                        tracer_provider,
                    )
                ),
                trust_caller=settings.trust_incoming_trace,
                resume_parent=service.resume_trace_parent,
            )
        )

    # [method-assign]: Starlette's one hook for the stack it builds; set here only.
    app.build_middleware_stack = stack  # type: ignore[method-assign]

    # Inside ``starlette.app``: FastAPI's own two (ExceptionTelemetryMiddleware,
    # AppBodyLimitMiddleware), then these, then ExceptionMiddleware (the app's exception
    # handlers), AsyncExitStackMiddleware and the routes. In this order a refused origin
    # costs nothing, and an allowed page can read a 413 or a 415.
    rejected = service.reject
    app.user_middleware = [
        Middleware(OriginGate, allowed_origins=settings.allowed_origins, on_reject=rejected),
        # No credentials: a wildcard origin is then harmless, and nothing here needs cookies.
        # [arg-type]: mypy cannot match a ``**options: Any`` to Middleware's ParamSpec.
        Middleware(
            JsonCORSMiddleware,  # type: ignore[arg-type, unused-ignore]
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Last-Event-ID"],
            expose_headers=["X-Session-Id", "traceresponse"],
            allow_credentials=False,
        ),
        Middleware(JsonBodiesOnly, on_reject=rejected),
        Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, on_reject=rejected),
        Middleware(HeadAsGet, get_only=get_only),
    ]


def configure_service_logging(settings: Settings) -> None:
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        file=settings.log_file,
        file_max_bytes=settings.log_file_max_bytes,
    )


def build(settings: Settings | None = None) -> FastAPI:
    """The uvicorn factory: everything from the environment."""
    settings = settings or Settings()
    configure_service_logging(settings)
    runtime = setup_telemetry(telemetry_config(settings))
    app = build_app(settings, runtime)
    # Everything built so far lives as long as the process: move it out of the collector's
    # way, so full collections under load walk only per-request objects.
    gc.collect()
    gc.freeze()
    return app


def supervise(settings: Settings) -> int:
    """``fit-check serve`` with several workers: the parent logs like a worker does, then
    runs them (each builds its own server with ``build_server``). Raises ``WorkersGaveUp``
    when a worker keeps dying (``app.workers`` says how often is too often)."""
    configure_service_logging(settings)
    return Supervisor(
        settings, settings.workers, target=functools.partial(serve_worker, settings)
    ).run()


def serve_worker(settings: Settings, sock: socket.socket, number: int) -> None:
    """A worker process: the whole service on the parent's socket, with the parent's
    settings (a spawned worker gets them pickled; its log file is its own)."""
    if settings.log_file is not None:
        settings = settings.model_copy(
            update={"log_file": worker_log_file(settings.log_file, number)}
        )
    build_server(settings).run(sockets=[sock])


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
        body_timeout_s=settings.body_timeout_s,
        allowed_hosts=settings.allowed_hosts,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        on_reject=service.reject,
    )
    return DrainingServer(config, drain=service.drain)
