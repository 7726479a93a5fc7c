"""HEAD on every GET route, answered as GET without the body (RFC 9110, 9.3.2).

FastAPI routes answer only the methods they name, so a monitor asking ``HEAD /health``
got ``405``. One middleware instead of a second method on every route: it runs the GET
and drops what the body would have been; status and headers, ``content-length``
included, are the GET's.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """Runs a HEAD request as a GET and sends no body.

    ``get_only`` names GET routes that start work (the stream: its GET opens an analysis,
    and what its answer's status is depends on that analysis being admitted). HEAD there is
    left to the router, which refuses it with ``405`` and an ``Allow`` without HEAD: HEAD
    must be safe, and a HEAD that answered ``200`` without doing the work would promise a
    stream the GET may refuse (``422``, ``429``, ``503``).
    """

    def __init__(self, app: ASGIApp, *, get_only: Collection[str]) -> None:
        self._app = app
        self._get_only = frozenset(get_only)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or scope["path"] in self._get_only:
            await self._app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
            elif not message.get("more_body", False):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self._app({**scope, "method": "GET"}, receive, without_body)
