"""Every client error is a 4xx with an ErrorBody; nothing a client sends becomes a 500."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas import ErrorBody, FieldError
from app.models import FitCheckRequest
from app.rejections import RejectionReason

#: Field names an error may name; anything else in a location came from the client.
_KNOWN_FIELDS = frozenset({*FitCheckRequest.model_fields, "Last-Event-ID"})
_UNKNOWN_FIELD = "(unknown field)"
_MAX_MESSAGE_CHARS = 200

_HTTP_CODES = {
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


def install_error_handlers(app: FastAPI, on_reject: Callable[[RejectionReason], None]) -> None:
    """Validation errors and Starlette's HTTP errors as ErrorBody answers. Each handler is
    registered for its own exception type, so it is typed for it (no runtime checks)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        on_reject("invalid_request")
        errors = _field_errors(exc.errors())
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return error_response(422, "INVALID_QUERY", summary or "Invalid request", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code,
            _HTTP_CODES.get(exc.status_code, "HTTP_ERROR"),
            str(exc.detail),
            headers=exc.headers,
        )
