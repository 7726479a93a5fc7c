"""The ASGI stack, outermost first, as the composition root (``app.asgi.asgi_stack``)
builds it: its order changes only with this file."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi import FastAPI
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp

from app.asgi import build_app, telemetry_config
from otel.wiring import setup_telemetry
from tests.helpers import HarnessFactory, attrs, in_process_client, make_settings

#: Starlette's stack as FastAPI builds it, its user middleware included.
STARLETTE = [
    "ServerErrorMiddleware",  # an exception is a 500
    "ExceptionTelemetryMiddleware",  # FastAPI's own
    "AppBodyLimitMiddleware",  # FastAPI's own
    "OriginGate",  # a refused origin costs nothing...
    "JsonCORSMiddleware",  # ...and an allowed page can read a 413 or a 415
    "JsonBodiesOnly",
    "BodySizeLimit",
    "HeadAsGet",
    "ExceptionMiddleware",  # the app's exception handlers
    "AsyncExitStackMiddleware",
]
TRACED = [
    "ServerSendInScope",  # the server's own send, for SSE body frames
    "IncomingTraceGate",  # the server span's parent, before the span reads the headers
    "ServerErrorMiddleware",  # a failure of the span's middleware is still a 500
    "OpenTelemetryMiddleware",  # the server span
    *STARLETTE[:1],
    "ExceptionsOnSpan",  # an exception on the span before the 500
    *STARLETTE[1:],
]
UNTRACED = ["ServerSendInScope", *STARLETTE]


async def built_stack(app: FastAPI) -> list[str]:
    """The layers from the outermost to the routes, after the first request built them."""
    async with in_process_client(app) as client:
        assert (await client.get("/health")).status_code == 200
    layers: list[str] = []
    layer: ASGIApp | None = app.middleware_stack
    while layer is not app.router:
        assert layer is not None, layers
        layers.append(type(layer).__name__)
        layer = getattr(layer, "app", None) or getattr(layer, "_app", None)
    return layers


async def test_the_stack_outermost_first(harness_factory: HarnessFactory) -> None:
    assert await built_stack(harness_factory().app) == TRACED


async def test_without_telemetry_the_stack_has_no_span_layers() -> None:
    settings = make_settings(otel_sdk_disabled=True)
    app = build_app(settings, setup_telemetry(telemetry_config(settings)))
    assert await built_stack(app) == UNTRACED


async def test_the_server_span_has_its_route_and_an_exception_before_the_500(
    harness_factory: HarnessFactory,
) -> None:
    harness = harness_factory()

    async def fail() -> None:
        raise RuntimeError("boom")

    harness.app.add_api_route("/fail/{n}", fail)
    transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/fail/1")).status_code == 500
    (span,) = [s for s in harness.telemetry.finished_spans() if s.kind is SpanKind.SERVER]
    assert span.name == "GET /fail/{n}"
    assert attrs(span)["http.route"] == "/fail/{n}"
    assert attrs(span)["http.response.status_code"] == 500
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_only_the_composition_root_sets_the_stack_builder() -> None:
    root = Path(__file__).resolve().parents[2]
    assigned = re.compile(r"\.build_middleware_stack\s*=[^=]")
    patching = [
        str(path.relative_to(root))
        for top in ("app", "otel")
        for path in sorted((root / top).rglob("*.py"))
        if assigned.search(path.read_text(encoding="utf-8"))
    ]
    assert patching == ["app/asgi.py"]
