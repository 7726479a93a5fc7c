"""The demo page at ``/`` (plain files from ``app/web/static``) and ``/redoc``.

The page streams an analysis from this same service, so it needs no CORS; the Jaeger UI
and Grafana addresses are injected into it as JSON (``<`` escaped, so the settings cannot
close the script element). A strict Content-Security-Policy keeps it to its own files.
"""

from __future__ import annotations

import json
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

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


def demo_router(*, jaeger_ui_url: str, grafana_url: str) -> APIRouter:
    config = json.dumps({"jaeger_ui_url": jaeger_ui_url, "grafana_url": grafana_url})
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
