"""What a request body may be: JSON in UTF-8, and no larger than a cap enforced before the
body is read whole."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.rejections import RejectionReason


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Answers 413 when Content-Length, or the bytes actually received, pass ``max_bytes``.

    Pure ASGI so it sees the body as it streams in; a lying or absent Content-Length
    is caught by counting.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, on_reject: Callable[[RejectionReason], None]
    ) -> None:
        self._app = app
        self._max = max_bytes
        self._on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self._max):
                await self._reject(scope, receive, send)
                return
        received = 0
        overflowed = rejected = False

        async def counting_receive() -> Message:
            nonlocal received, overflowed
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    overflowed = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The framework turns the aborted read into its own error answer; ours replaces it.
            nonlocal rejected
            if not overflowed:
                await send(message)
            elif message["type"] == "http.response.start" and not rejected:
                rejected = True
                await self._reject(scope, receive, send)

        try:
            await self._app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not rejected:
                await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._on_reject("payload_too_large")
        refusal = error_response(
            413,
            "PAYLOAD_TOO_LARGE",
            f"request body exceeds {self._max} bytes",
            headers={"Connection": "close"},
        )
        await refusal(scope, receive, send)


def is_json_in_utf8(content_type: bytes | None) -> bool:
    """``application/json`` (or ``application/<x>+json``, as FastAPI reads them), with no
    charset or UTF-8's: JSON is UTF-8 (RFC 8259, 8.1)."""
    if content_type is None:
        return False
    media_type, *parameters = content_type.decode("latin-1").split(";")
    if media_type.count("/") != 1:  # not a media type: FastAPI reads it as text/plain
        return False
    kind, _, subtype = media_type.strip().lower().partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


class JsonBodiesOnly:
    """Answers 415 to a POST whose ``Content-Type`` is not JSON in UTF-8, or is missing.

    FastAPI reads a body of another type as no body at all (a 422 saying "Input should be
    a valid dictionary") or fails to decode it (a 400): neither tells the client what to
    send. Every POST route here takes JSON.
    """

    def __init__(self, app: ASGIApp, *, on_reject: Callable[[RejectionReason], None]) -> None:
        self._app = app
        self._on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            content_type = next(
                (value for name, value in scope["headers"] if name == b"content-type"), None
            )
            if not is_json_in_utf8(content_type):
                self._on_reject("invalid_request")
                refusal = error_response(
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "the body must be JSON in UTF-8, sent with Content-Type: application/json",
                )
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)
