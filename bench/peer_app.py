"""The peer variant: our service with OpenTelemetry off plus prometheus-fastapi-instrumentator.

That is the metrics-only setup many FastAPI services run, so it is the yardstick for what
our full telemetry costs. The app is built by ``app.asgi.build()`` itself (with
``OTEL_SDK_DISABLED=true`` from the environment), then instrumented.

``python -m bench.peer_app`` serves it with the very ``uvicorn.run`` call that
``fit-check serve`` makes, only with this factory. Not the ``uvicorn`` command line: that
installs uvicorn's own logging config, whose access logger logs every request at INFO
whatever ``LOG_LEVEL`` says, and the peer would then pay for logging the baseline does not.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator

from app.asgi import build

# The app already routes /metrics (404 while the SDK is off, and it comes first), so the
# instrumentator's own exposition gets a path of its own.
PEER_METRICS_PATH = "/peer-metrics"


def build_peer() -> FastAPI:
    """The uvicorn factory of the peer."""
    app = build()
    Instrumentator().instrument(app).expose(app, endpoint=PEER_METRICS_PATH)
    return app


def main() -> None:
    import uvicorn

    from app.config import Settings

    settings = Settings()
    uvicorn.run(
        "bench.peer_app:build_peer",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
