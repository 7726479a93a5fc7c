"""HTTP routes: the stream (POST and GET), health, liveness and metrics."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from app.api.errors import error_response
from app.api.schemas import (
    SSE_DESCRIPTION,
    ErrorBody,
    FitCheckRequest,
    HealthResponse,
    LivenessResponse,
    sse_event_schema,
)
from app.pipeline.session import SessionRun
from app.pipeline.sessions import SessionLimitReached
from app.service import FitCheckService

RETRY_AFTER_S = 5


async def get_service(request: Request) -> FitCheckService:
    # async: a plain def dependency would cost every request a hop to the thread pool.
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[FitCheckService, Depends(get_service)]


class SessionStreamResponse(EventSourceResponse):
    """An SSE response that owns its session: started when sent, closed however it ends.

    Closing in ``__call__``'s ``finally`` covers the paths a generator's own cleanup
    misses, such as a client that disconnects before the first event is read.
    """

    def __init__(self, run: SessionRun, *, ping_s: float, headers: dict[str, str]) -> None:
        super().__init__(run.frames(), ping=ping_s, headers=headers)
        self._run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._run.start()
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._run.close()


STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": SSE_DESCRIPTION,
        "content": {"text/event-stream": {"schema": sse_event_schema()}},
    },
    413: {"model": ErrorBody, "description": "Body larger than FIT_CHECK_MAX_BODY_BYTES"},
    422: {"model": ErrorBody, "description": "Invalid query, session_id or body"},
    429: {"model": ErrorBody, "description": "FIT_CHECK_MAX_CONCURRENT_SESSIONS reached"},
}

router = APIRouter()


def _open_stream(service: ServiceDep, body: FitCheckRequest) -> Response:
    trace = service.telemetry.trace_header()
    try:
        run = service.open_session(body, trace_id=trace[0] if trace else None)
    except SessionLimitReached as exc:
        return error_response(
            429, "RATE_LIMITED", str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}
        )
    headers = {
        "X-Session-Id": run.session_id,
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
    if trace is not None:
        headers["traceresponse"] = trace[1]
    return SessionStreamResponse(run, ping_s=service.settings.sse_ping_s, headers=headers)


@router.post(
    "/api/fit-check/stream",
    response_class=Response,
    responses=STREAM_RESPONSES,
    summary="Stream a fit analysis (SSE)",
    tags=["fit-check"],
)
async def stream_post(body: FitCheckRequest, service: ServiceDep) -> Response:
    return _open_stream(service, body)


@router.get(
    "/api/fit-check/stream",
    response_class=Response,
    responses=STREAM_RESPONSES,
    summary="Stream a fit analysis (SSE) for EventSource clients",
    tags=["fit-check"],
)
async def stream_get(params: Annotated[FitCheckRequest, Query()], service: ServiceDep) -> Response:
    return _open_stream(service, params)


@router.get("/api/fit-check/health", response_model=HealthResponse, tags=["health"])
async def fit_check_health(service: ServiceDep) -> HealthResponse:
    return service.health()


@router.get("/health", response_model=LivenessResponse, tags=["health"])
async def liveness() -> LivenessResponse:
    return LivenessResponse()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, service: ServiceDep) -> Response:
    settings = service.settings
    if settings.metrics_port is not None:
        return error_response(
            404, "NOT_FOUND", f"metrics are served on port {settings.metrics_port}"
        )
    if settings.metrics_token is not None:
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.metrics_token}".encode()):
            return error_response(
                401,
                "UNAUTHORIZED",
                "metrics need a bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
    rendered = service.telemetry.render_metrics(request.headers.get("accept"))
    if rendered is None:
        return error_response(404, "NOT_FOUND", "metrics are off (OTEL_SDK_DISABLED=true)")
    body, content_type = rendered
    return Response(body, media_type=content_type)
