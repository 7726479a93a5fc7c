"""The app factory: ``create_app(settings, telemetry)`` builds one independent service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import __version__
from app.api.errors import install_error_handlers
from app.api.limits import BodySizeLimit
from app.api.origins import JsonCORSMiddleware, OriginGate
from app.api.routes import router
from app.api.schemas import SSE_EVENT_MODELS
from app.config import Settings
from app.providers.factory import Providers, build_providers
from app.service import FitCheckService
from otel.facade import Telemetry


def create_app(
    settings: Settings,
    telemetry: Telemetry,
    *,
    providers: Providers | None = None,
    on_shutdown: Sequence[Callable[[], object]] = (),
) -> FastAPI:
    """Build the FastAPI app. Nothing global: call it as often as you like."""
    providers = providers or build_providers(settings, telemetry.instrument_http_client)
    service = FitCheckService.build(settings, telemetry, providers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await service.providers.aclose()
            for hook in on_shutdown:
                hook()

    app = FastAPI(
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
    install_error_handlers(app, service.telemetry.rejected)
    app.include_router(router)
    # Added innermost first: OriginGate -> CORS -> BodySizeLimit -> routes, so a refused
    # origin costs nothing and an allowed page can read a 413.
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, on_reject=service.telemetry.rejected
    )
    # No credentials: a wildcard origin is then harmless, and nothing here needs cookies.
    app.add_middleware(
        JsonCORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "Last-Event-ID"],
        expose_headers=["X-Session-Id", "traceresponse"],
        allow_credentials=False,
    )
    app.add_middleware(
        OriginGate, allowed_origins=settings.allowed_origins, on_reject=service.telemetry.rejected
    )
    _document_sse_events(app)
    return app


def _document_sse_events(app: FastAPI) -> None:
    """Put the SSE payload schemas into the OpenAPI components, where /docs shows them."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in SSE_EVENT_MODELS.values():
                components[model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
