"""The demo page at ``/`` (plain files from ``app/web/static``), ``/redoc`` and ``/trace``.

The page streams an analysis from this same service, so it needs no CORS; where its trace
links go (Jaeger's UI, or this service's own ``/trace`` page), Grafana and VictoriaLogs
addresses are injected into it as JSON (``<`` escaped, so the settings cannot close the
script element). A strict Content-Security-Policy keeps it to its own files.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources

import httpx
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.trace_view import TraceNotFound, fetch_trace_async, kept_rows, render
from otel.facade import RecentTraces

STATIC_DIR = resources.files("app.web") / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


#: ReDoc's page would fetch a "powered by" logo from a CDN: images stay on this host.
REDOC_CONTENT_SECURITY_POLICY = "img-src 'self' data:"


def redoc_router(title: str) -> APIRouter:
    """``/redoc`` from fastapi-offline's bundled ReDoc, with no request leaving the host."""
    router = APIRouter()

    @router.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url="/static-offline-docs/redoc.standalone.js",
            redoc_favicon_url="/static-offline-docs/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = REDOC_CONTENT_SECURITY_POLICY
        return page

    return router


def static_files() -> StaticFiles:
    return StaticFiles(directory=str(STATIC_DIR))


def demo_router(*, trace_ui_url: str, grafana_url: str, logs_ui_url: str) -> APIRouter:
    """``trace_ui_url``: where ``/trace/{id}`` links go; empty for this service's own."""
    config = json.dumps(
        {"trace_ui_url": trace_ui_url, "grafana_url": grafana_url, "logs_ui_url": logs_ui_url}
    )
    page = (
        (STATIC_DIR / "index.html")
        .read_text()
        .replace("__CONFIG__", config.replace("<", "\\u003c"))
    )
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def demo_page(_request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    return router


TRACE_ID = re.compile(r"[0-9a-f]{32}")
_TRACE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>trace {trace_id}</title><link rel="stylesheet" href="/static/demo.css"></head>
<body><header><h1>trace {trace_id}</h1><p>{note}</p></header><pre class="trace">{body}</pre>
</body></html>"""


def trace_router(jaeger_url: str, recent: RecentTraces | None = None) -> APIRouter:
    """``/trace/{trace_id}``: a trace as a tree.

    With no trace back-end configured, read from the spans this process keeps (``recent``):
    the demo page's trace links land here after ``make run`` with nothing else running.
    Otherwise read from Jaeger's query API, for a Jaeger without its UI (the one ``make
    stack`` builds from the Go module): point ``FIT_CHECK_JAEGER_UI_URL`` at the service
    itself and the demo page's trace links land here, where Jaeger's UI would put them.
    """
    router = APIRouter()

    @router.get("/trace/{trace_id}", include_in_schema=False)
    async def trace_page(trace_id: str) -> HTMLResponse:
        if not TRACE_ID.fullmatch(trace_id):
            status, note, body = 404, "not a trace id: 32 lowercase hex characters", ""
        elif recent is not None:
            status, note, body = _from_memory(recent, trace_id)
        else:
            status, note, body = await _from_jaeger(jaeger_url, trace_id)
        page = _TRACE_PAGE.format(
            trace_id=html.escape(trace_id[:64]), note=html.escape(note), body=html.escape(body)
        )
        return HTMLResponse(
            page, status_code=status, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY}
        )

    return router


def _from_memory(recent: RecentTraces, trace_id: str) -> tuple[int, str, str]:
    bounds = f"the last {recent.max_traces} traces, at most {recent.max_bytes / 2**20:g} MiB"
    kept = recent.get(trace_id)
    if kept is None or not kept.spans:
        return (
            404,
            (
                f"not in this process's memory, which keeps {bounds}, when no trace back-end is "
                "configured: this trace is older, from before a restart, or another worker's"
            ),
            "",
        )
    note = f"kept in this process's memory ({bounds})"
    if kept.dropped:
        note += f"; {kept.dropped} more of its spans were past the byte bound"
    return 200, note, "\n".join(render(kept_rows(kept.spans)))


async def _from_jaeger(jaeger_url: str, trace_id: str) -> tuple[int, str, str]:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            body = "\n".join(render(await fetch_trace_async(client, jaeger_url, trace_id)))
    except TraceNotFound:
        return 404, "not in Jaeger (yet: spans arrive a few seconds after a stream)", ""
    except httpx.HTTPError as exc:
        return 502, f"Jaeger at {jaeger_url} did not answer ({type(exc).__name__})", ""
    return 200, f"from {jaeger_url}", body
