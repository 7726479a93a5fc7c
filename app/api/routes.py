"""HTTP routes: the stream (POST and GET), health, readiness, liveness and metrics."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from app.api.direct_send import DirectEventSourceResponse, body_frames_direct
from app.api.errors import error_response
from app.api.schemas import (
    SSE_DESCRIPTION,
    LivenessResponse,
    ReadinessResponse,
    sse_event_schema,
)
from app.models import ErrorBody, FeedbackRequest, FitCheckRequest
from app.pipeline.budget import BudgetExceeded
from app.pipeline.event_ids import parse_last_event_id
from app.pipeline.live_sessions import SessionLimitReached
from app.pipeline.remote_stream import remote_frames
from app.pipeline.session import SessionRun
from app.service import FitCheckService, HealthResponse, RemoteSession, SessionStoreUnavailable
from otel.facade import ScrapeRefused, Telemetry, TraceRef

SHUTTING_DOWN_RETRY_AFTER_S = 1

log = logging.getLogger("fit_check.api")


async def get_service(request: Request) -> FitCheckService:
    # async: a plain def dependency would cost every request a hop to the thread pool.
    service: FitCheckService = request.app.state.service
    return service


ServiceDep = Annotated[FitCheckService, Depends(get_service)]
LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="Sent by an EventSource that reconnects: resume the stream after "
        "this event, or get 204 (stop reconnecting) when there is nothing to resume. "
        "Never starts a new analysis.",
    ),
]


class SessionStreamResponse(DirectEventSourceResponse):
    """An SSE response reading a session from event ``after`` on.

    The response that opened the session (``after`` is None) starts it and, when its own
    stream ends however it ends, lingers until the session is settled: a reconnect may
    still pick the session up, and the opening request's span stays the trace's root.
    """

    def __init__(
        self,
        run: SessionRun,
        telemetry: Telemetry,
        *,
        after: int | None,
        ping_s: float,
        send_timeout_s: float,
        headers: dict[str, str],
    ) -> None:
        # The send timeout: a connection that takes nothing (a client that stopped
        # reading) is closed instead of holding its session for good.
        # The session writes its frames straight to this response while it waits for
        # them (``DirectEventSourceResponse.write_now``).
        frames = run.frames(after, writer=self)
        super().__init__(frames, ping=ping_s, headers=headers, send_timeout=send_timeout_s)
        # Connection is hop-by-hop: the server decides (HTTP/1.0 clients get `close`).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"connection"]
        self._run = run
        self._telemetry = telemetry
        self._after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._telemetry.session_context(self._run.session_id):
            if self._after is None:
                self._run.start()
            else:
                self._telemetry.stream_resumed(self._run.session_id, self._after)
            try:
                await super().__call__(scope, receive, body_frames_direct(scope, send))
            except SendTimeoutError:
                # Nothing more can go down this connection; the session may still be
                # resumed on another within its window.
                log.warning("The client took no data in time; closing its connection")
                self._run.reader_stalled()
            finally:
                if self._after is None:
                    await self._run.linger()


class RemoteStreamResponse(EventSourceResponse):
    """An SSE response reading on, from the shared store, a session another replica runs."""

    def __init__(
        self,
        service: FitCheckService,
        remote: RemoteSession,
        *,
        after: int,
        headers: dict[str, str],
    ) -> None:
        store = service.store
        if store is None:  # pragma: no cover - a RemoteSession comes from the store
            raise RuntimeError("no shared store")
        settings = service.settings
        frames = remote_frames(
            store,
            remote.key,
            after=after,
            retry_frame=b"retry: %d\r\n\r\n" % settings.sse_retry_ms,
            telemetry=service.telemetry,
        )
        super().__init__(
            frames, ping=settings.sse_ping_s, headers=headers, send_timeout=settings.slow_reader_s
        )
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"connection"]
        self._telemetry = service.telemetry
        self._session_id = remote.stored.session_id
        self._after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._telemetry.session_context(self._session_id):
            self._telemetry.stream_resumed(self._session_id, self._after)
            try:
                await super().__call__(scope, receive, body_frames_direct(scope, send))
            except SendTimeoutError:
                log.warning("The client took no data in time; closing its connection")


STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": SSE_DESCRIPTION,
        "content": {"text/event-stream": {"schema": sse_event_schema()}},
    },
    204: {"description": "Last-Event-ID names a stream that ended or is not here: stop"},
    400: {"model": ErrorBody, "description": "Last-Event-ID is not an id this service sent"},
    403: {"model": ErrorBody, "description": "Origin header not in ALLOWED_ORIGINS"},
    413: {"model": ErrorBody, "description": "Body larger than FIT_CHECK_MAX_BODY_BYTES"},
    422: {"model": ErrorBody, "description": "Invalid query, session_id or body"},
    429: {
        "model": ErrorBody,
        "description": "FIT_CHECK_MAX_CONCURRENT_SESSIONS or FIT_CHECK_MAX_SESSIONS_PER_CLIENT "
        "reached (RATE_LIMITED), or this session's reconnects are used up (RECONNECT_LIMIT), "
        "or this hour's LLM spend reached FIT_CHECK_BUDGET_USD_PER_HOUR (BUDGET_EXCEEDED)",
    },
    503: {
        "model": ErrorBody,
        "description": "The instance is shutting down (SHUTTING_DOWN), or the shared session "
        "store is unreachable and FIT_CHECK_REDIS_FAILURE_MODE=closed, or a reconnect's session "
        "may be on another replica and the store cannot say (SESSION_STORE_UNAVAILABLE): retry",
    },
}

router = APIRouter()


def _stream_headers(session_id: str, trace: TraceRef | None) -> dict[str, str]:
    headers = {"X-Session-Id": session_id, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if trace is not None:
        headers["traceresponse"] = trace.traceparent
    return headers


def _client(request: Request) -> str:
    """The client's address: the peer's, or the one a trusted proxy names (uvicorn's proxy
    headers, ``FIT_CHECK_FORWARDED_ALLOW_IPS``)."""
    return request.client.host if request.client is not None else ""


def _store_unavailable(service: FitCheckService, message: str) -> Response:
    service.reject("session_store_unavailable")
    return error_response(
        503,
        "SESSION_STORE_UNAVAILABLE",
        message,
        headers={"Retry-After": str(SHUTTING_DOWN_RETRY_AFTER_S)},
    )


async def _open_stream(
    service: FitCheckService, body: FitCheckRequest, client: str, last_event_id: str | None
) -> Response:
    if last_event_id:  # an empty one names no stream: a client's first connection
        return await _resume_stream(service, last_event_id)
    if service.draining:
        service.reject("shutting_down")
        return error_response(
            503,
            "SHUTTING_DOWN",
            "this instance is shutting down; send the request again",
            headers={"Retry-After": str(SHUTTING_DOWN_RETRY_AFTER_S), "Connection": "close"},
        )
    try:
        run = await service.open_session(body, client)
    except SessionLimitReached as exc:
        service.reject("rate_limited")
        return error_response(
            429, "RATE_LIMITED", str(exc), headers={"Retry-After": str(exc.retry_after_s)}
        )
    except BudgetExceeded as exc:
        service.reject("budget_exceeded")
        return error_response(
            429, "BUDGET_EXCEEDED", str(exc), headers={"Retry-After": str(exc.retry_after_s)}
        )
    except SessionStoreUnavailable:
        return _store_unavailable(
            service, "the shared session store is unreachable; send the request again"
        )
    return _session_response(service, run, after=None)


def _session_response(service: FitCheckService, run: SessionRun, after: int | None) -> Response:
    settings = service.settings
    return SessionStreamResponse(
        run,
        service.telemetry,
        after=after,
        ping_s=settings.sse_ping_s,
        send_timeout_s=settings.slow_reader_s,
        headers=_stream_headers(run.session_id, service.telemetry.current_trace()),
    )


async def _resume_stream(service: FitCheckService, last_event_id: str) -> Response:
    """A reconnect never starts an analysis: it reads on, or is told to stop (204)."""
    last = parse_last_event_id(last_event_id)
    resumed = None if last is None else await service.resume(last)
    if resumed is None or resumed == "future":
        service.reject("invalid_request")
        return error_response(
            400, "INVALID_LAST_EVENT_ID", "Last-Event-ID is not an event id this service sent"
        )
    if resumed == "gone":
        return Response(status_code=204)
    if resumed == "limit":
        service.reject("rate_limited")
        return error_response(
            429,
            "RECONNECT_LIMIT",
            f"this stream has been resumed {service.settings.max_reconnects} times, the "
            "limit; start a new analysis",
        )
    if resumed == "store_unavailable":
        return _store_unavailable(
            service, "the shared session store is unreachable; reconnect in a moment"
        )
    if last is None:  # pragma: no cover - parsed above, or answered 400
        raise RuntimeError("unparsed Last-Event-ID")
    if isinstance(resumed, RemoteSession):
        return RemoteStreamResponse(
            service,
            resumed,
            after=last.seq,
            headers=_stream_headers(resumed.stored.session_id, service.telemetry.current_trace()),
        )
    return _session_response(service, resumed, after=last.seq)


@router.post(
    "/api/fit-check/stream",
    response_class=Response,
    responses=STREAM_RESPONSES,
    summary="Stream a fit analysis (SSE)",
    tags=["fit-check"],
)
async def stream_post(
    body: FitCheckRequest,
    request: Request,
    service: ServiceDep,
    last_event_id: LastEventIdHeader = None,
) -> Response:
    return await _open_stream(service, body, _client(request), last_event_id)


@router.get(
    "/api/fit-check/stream",
    response_class=Response,
    responses=STREAM_RESPONSES,
    summary="Stream a fit analysis (SSE) for EventSource clients",
    tags=["fit-check"],
)
async def stream_get(
    params: Annotated[FitCheckRequest, Query()],
    request: Request,
    service: ServiceDep,
    last_event_id: LastEventIdHeader = None,
) -> Response:
    return await _open_stream(service, params, _client(request), last_event_id)


class FeedbackRecorded(BaseModel):
    status: Literal["recorded"] = "recorded"


@router.post(
    "/api/fit-check/feedback",
    status_code=202,
    response_model=FeedbackRecorded,
    responses={
        404: {"model": ErrorBody, "description": "No session with that key, or its window ended"},
        409: {"model": ErrorBody, "description": "This session has its verdict already"},
        422: {"model": ErrorBody, "description": "Invalid key, rating or comment"},
        429: {"model": ErrorBody, "description": "Too many verdicts from this client"},
    },
    summary="Rate an analysis (up or down), recorded in its trace",
    tags=["fit-check"],
)
async def feedback(
    body: FeedbackRequest, request: Request, service: ServiceDep
) -> FeedbackRecorded | Response:
    verdict = await service.record_feedback(body, _client(request))
    if verdict == "unknown":
        return error_response(
            404,
            "UNKNOWN_SESSION",
            f"no session with that key, or its {service.settings.feedback_window_s} s "
            "feedback window has ended",
        )
    if verdict == "duplicate":
        return error_response(409, "FEEDBACK_EXISTS", "this session has its verdict already")
    if verdict == "rate_limited":
        service.reject("rate_limited")
        return error_response(
            429,
            "RATE_LIMITED",
            f"at most {service.settings.feedback_per_client_per_minute} verdicts a minute "
            "from one client",
            headers={"Retry-After": "60"},
        )
    return FeedbackRecorded()


@router.get("/api/fit-check/health", response_model=HealthResponse, tags=["health"])
async def fit_check_health(service: ServiceDep) -> HealthResponse:
    return service.health()


@router.get("/health", response_model=LivenessResponse, tags=["health"])
async def liveness() -> LivenessResponse:
    return LivenessResponse()


@router.get(
    "/ready",
    response_model=ReadinessResponse,
    responses={503: {"model": ErrorBody, "description": "Draining: send no new streams here"}},
    tags=["health"],
)
async def readiness(service: ServiceDep) -> Response | ReadinessResponse:
    if service.draining:
        return error_response(503, "SHUTTING_DOWN", "this instance is draining")
    store = service.store
    if (
        store is not None
        and not store.available
        and service.settings.redis_failure_mode == "closed"
    ):
        return error_response(
            503, "SESSION_STORE_UNAVAILABLE", "the shared session store is unreachable"
        )
    return ReadinessResponse()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, service: ServiceDep) -> Response:
    answer = service.telemetry.scrape(
        accept=request.headers.get("accept"), authorization=request.headers.get("authorization")
    )
    if isinstance(answer, ScrapeRefused):
        return error_response(answer.status, answer.code, answer.message, headers=answer.headers)
    return Response(answer.body, media_type=answer.content_type)
