"""Browser origins: refused before any work starts, and CORS answers in the API's shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.rejections import RejectionReason

_FORBIDDEN_MESSAGE = "this origin may not call the API (the server's ALLOWED_ORIGINS)"


def origin_names(allowed_origins: Sequence[str]) -> list[str]:
    """The origins as a browser sends them: ``https://a.example/`` is ``https://a.example``
    (an ``Origin`` header never ends in a slash, and a configured one often does)."""
    return [origin.rstrip("/") for origin in allowed_origins]


class OriginGate:
    """Answers 403 to any request whose ``Origin`` is present and not allowed.

    CORS alone only hides the answer from the page: a page on any origin could still make
    the browser start an analysis, and pay for its LLM calls. Requests without ``Origin``
    (curl, servers) pass, and so do same-origin ones (the ``Origin`` names the host the
    request was sent to, as a page served by the service itself sends on a POST; behind a
    proxy, that needs the proxy to pass ``Host`` on). The origin is never echoed.

    Same-origin trusts ``Host``: a DNS-rebinding page sends its own name in both. The server
    answers only known ``Host`` names (``app.host_names.HostAllowList``), which closes that.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_origins: Sequence[str],
        on_reject: Callable[[RejectionReason], None],
    ) -> None:
        self._app = app
        self._any = "*" in allowed_origins
        self._allowed = frozenset(
            origin.encode("latin-1") for origin in origin_names(allowed_origins)
        )
        self._on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._any:
            origin = host = None
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value
                elif name == b"host":
                    host = value
            if origin is not None and not self._allows(origin, host):
                self._on_reject("origin_not_allowed")
                refusal = error_response(403, "ORIGIN_NOT_ALLOWED", _FORBIDDEN_MESSAGE)
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)

    def _allows(self, origin: bytes, host: bytes | None) -> bool:
        if origin in self._allowed:
            return True
        # Same origin: the page's host is the one it sent this request to. The scheme is
        # left out on purpose: behind a proxy that ends TLS, the page is https and this
        # hop is http. A page elsewhere cannot make a browser send this Host with it.
        return bool(host) and origin.partition(b"://")[2] == host


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered as JSON like every other
    error of the API (Starlette answers ``400 text/plain``), and the allowed origins read
    as ``OriginGate`` reads them."""

    def __init__(self, app: ASGIApp, *, allow_origins: Sequence[str] = (), **options: Any) -> None:
        super().__init__(app, allow_origins=origin_names(allow_origins), **options)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {
            k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
        }
        return JSONResponse(
            {
                "code": "CORS_PREFLIGHT_REFUSED",
                "message": bytes(response.body).decode(errors="replace"),
                "errors": [],
            },
            status_code=response.status_code,
            headers=headers,
        )
