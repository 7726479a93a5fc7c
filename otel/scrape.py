"""Serving the Prometheus exposition: who may scrape it, in which format, and on which port.

The same rules hold for ``/metrics`` on the public port and on a port of its own
(``FIT_CHECK_METRICS_PORT``): a token, when set, is required on both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder

from otel.facade import bearer_token_matches

Render = Callable[[str | None], tuple[bytes, str]]


def exposition_renderer(registry: CollectorRegistry) -> Render:
    """Text or OpenMetrics as the scraper's ``Accept`` asks; plain text for an ``Accept``
    the client library cannot parse (it raises on e.g. ``version=abc``)."""

    def render(accept: str | None) -> tuple[bytes, str]:
        try:
            encoder, content_type = choose_encoder(accept or "")
            return encoder(registry), content_type
        except (TypeError, ValueError):
            return generate_latest(registry), CONTENT_TYPE_LATEST

    return render


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the service's own lines."""


def serve_metrics_port(
    render: Render, host: str, port: int, token: str | None, unauthorised: bytes
) -> tuple[WSGIServer, int]:
    """Serve the exposition on its own port from a daemon thread; returns (server, port).
    ``unauthorised`` is the JSON body of a scrape without the token (the service's one
    error shape, given by the composition root)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if token is not None and not bearer_token_matches(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")],
            )
            return [unauthorised]
        body, content_type = render(environ.get("HTTP_ACCEPT"))
        start_response("200 OK", [("Content-Type", content_type)])
        return [body]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True).start()
    return server, server.server_port
