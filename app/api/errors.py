"""Every client error is a 4xx with an ErrorBody; nothing a client sends becomes a 500."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas import ErrorBody, FieldError

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
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, errors=list(errors))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field_errors(raw: Sequence[Any]) -> list[FieldError]:
    """Pydantic's errors without their ``input``: echoing hostile input back helps nobody."""
    result = []
    for err in raw:
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query"):  # where it came from, not which field
            loc = loc[1:]
        location = [str(part) for part in loc]
        message = str(err.get("msg", "invalid"))
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        result.append(
            FieldError(
                field=".".join(location) or "body",
                rule=str(err.get("type", "invalid")),
                message=message,
            )
        )
    return result


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc.errors())
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return error_response(422, "INVALID_QUERY", summary or "Invalid request", errors)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(
        exc.status_code,
        _HTTP_CODES.get(exc.status_code, "HTTP_ERROR"),
        str(exc.detail),
        headers=exc.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
