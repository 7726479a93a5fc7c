"""A request-body cap enforced before the body is read whole."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
                await self._reject(send)
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
                await self._reject(send)

        try:
            await self._app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not rejected:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        self._on_reject("payload_too_large")
        body = json.dumps(
            {
                "code": "PAYLOAD_TOO_LARGE",
                "message": f"request body exceeds {self._max} bytes",
                "errors": [],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
