"""Every client error is a 4xx with an ErrorBody; nothing a client sends becomes a 500."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from app.models import ErrorBody, FeedbackRequest, FieldError, FitCheckRequest
from app.rejections import RejectionReason

#: Field names an error may name; anything else in a location came from the client.
_KNOWN_FIELDS = frozenset(
    {*FitCheckRequest.model_fields, *FeedbackRequest.model_fields, "Last-Event-ID"}
)
_UNKNOWN_FIELD = "(unknown field)"
_MAX_MESSAGE_CHARS = 200

#: The methods a ``405``'s ``Allow`` may name: those the routes here are declared with.
_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMITED",
}


def error_response(
    status: int,
    code: str,
    message: str,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, errors=list(errors))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field_name(part: object) -> str:
    if isinstance(part, int) or part in _KNOWN_FIELDS:
        return str(part)
    return _UNKNOWN_FIELD


def _field_errors(raw: Sequence[Any]) -> list[FieldError]:
    """Pydantic's errors, bounded and without input: no ``input``, no unknown field names
    (``{"<script>": 1}`` must not come back), each (field, rule) once. Fields come from a
    closed set (the model's, plus "(unknown field)"), so a body of ten thousand unknown
    keys gets a short answer."""
    result: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for err in raw:
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "header"):  # where it came from
            loc = loc[1:]
        field = ".".join(_field_name(part) for part in loc) or "body"
        rule = str(err.get("type", "invalid"))
        if (field, rule) in seen:
            continue
        seen.add((field, rule))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if rule == "extra_forbidden":
            message = f"unknown field; accepted: {', '.join(FitCheckRequest.model_fields)}"
        result.append(FieldError(field=field, rule=rule, message=message[:_MAX_MESSAGE_CHARS]))
    return result


def allowed_methods(request: Request, get_only: Collection[str]) -> str | None:
    """``Allow`` for a ``405``: each method some route on the path answers (Starlette names
    only the first route's, and the stream has two), and HEAD wherever GET is but on
    ``get_only`` paths (see ``HeadAsGet``). None when only a mounted app is there: it
    says for itself."""
    scope = request.scope
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    methods = {
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    }
    if not methods:
        return None
    if "GET" in methods and request.url.path not in get_only:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_error_handlers(
    app: FastAPI,
    on_reject: Callable[[RejectionReason], None],
    *,
    get_only: Collection[str] = (),
) -> None:
    """Validation errors and Starlette's HTTP errors as ErrorBody answers. Each handler is
    registered for its own exception type, so it is typed for it (no runtime checks).
    ``get_only``: the GET routes that refuse HEAD, for the ``Allow`` of a ``405``."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        on_reject("invalid_request")
        errors = _field_errors(exc.errors())
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return error_response(422, "INVALID_QUERY", summary or "Invalid request", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        allow = allowed_methods(request, get_only) if exc.status_code == 405 else None
        if allow is not None:
            headers = {**(headers or {}), "Allow": allow}
        return error_response(
            exc.status_code,
            _HTTP_CODES.get(exc.status_code, "HTTP_ERROR"),
            str(exc.detail),
            headers=headers,
        )
