"""A real browser's EventSource (Debian's Chromium, driven by Playwright).

The page is served by a server of its own on loopback, an origin the service allows, and
streams from the service cross-origin, as a real front end would. It never calls
``close()``: the server alone must stop the browser from reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.e2e.chromium import chromium_page
from tests.e2e.relay import analyses, relay
from tests.fakes import counting_providers
from tests.helpers import HarnessFactory, LiveServerFactory, wait_until

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.e2e


def page_html(stream_url: str) -> str:
    return f"""<!doctype html><meta charset="utf-8"><title>fit-check</title>
<script>
window.events = [];
window.opened = 0;
window.failures = 0;
const source = new EventSource({json.dumps(stream_url)});
source.onopen = () => window.opened++;
source.onerror = () => window.failures++;
for (const type of ["session", "phase", "thought", "phase_complete", "response",
                    "complete", "error"]) {{
  source.addEventListener(type, (e) => {{
    // A lost connection is an `error` event too, without data: not one of ours.
    if (e instanceof MessageEvent) window.events.push({{type, id: e.lastEventId}});
  }});
}}
window.state = () => source.readyState;
</script>"""


class PageServer:
    """Serves the page on loopback; its origin is what the service must allow."""

    def __init__(self, live_server: LiveServerFactory) -> None:
        self.html = ""
        app = Starlette(routes=[Route("/", lambda _request: HTMLResponse(self.html))])
        self._server = live_server(app)

    async def __aenter__(self) -> PageServer:
        await self._server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.__aexit__(*exc)

    @property
    def origin(self) -> str:
        return self._server.url


@contextlib.asynccontextmanager
async def browser_page(pages: PageServer, stream_url: str) -> AsyncIterator[Page]:
    pages.html = page_html(stream_url)
    async with chromium_page() as page:
        await page.goto(pages.origin)
        yield page


class CuttableProxy:
    """A TCP proxy on loopback whose connections the test can cut, like a flaky network."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers += [writer, up_writer]

        await relay((reader, writer), (up_reader, up_writer))


async def test_a_page_that_never_closes_its_eventsource_runs_one_analysis(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=0.2)
    async with PageServer(live_server) as pages:
        h = harness_factory(providers=providers, sse_retry_ms=500, allowed_origins=pages.origin)
        async with live_server(h.app) as server:
            url = f"{server.url}/api/fit-check/stream?query=Senior%20Python%20engineer"
            async with browser_page(pages, url) as page:
                await page.wait_for_function("window.events.some(e => e.type === 'complete')")
                await page.wait_for_timeout(20_000)  # 20 s of browser time, never closed
                events = await page.evaluate("window.events")
                state = await page.evaluate("window.state()")
                opened = await page.evaluate("window.opened")
    assert [e["type"] for e in events].count("complete") == 1
    assert state == 2  # CLOSED: the server's 204 told it to stop
    assert opened == 1
    assert llm.calls == 3
    assert analyses(h) == 1


async def test_a_connection_cut_mid_analysis_resumes_without_a_second_analysis(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    providers, search, llm = counting_providers(llm_delay_s=0.5, llm_chunk_delay_s=0.01)
    async with PageServer(live_server) as pages:
        h = harness_factory(providers=providers, sse_retry_ms=300, allowed_origins=pages.origin)
        async with live_server(h.app) as server, CuttableProxy(server.port) as proxy:
            url = f"http://127.0.0.1:{proxy.port}/api/fit-check/stream?query=Python%20Kafka"
            async with browser_page(pages, url) as page:
                await page.wait_for_function("window.events.some(e => e.type === 'phase_complete')")
                assert llm.calls < 3  # mid-analysis
                proxy.cut()
                await page.wait_for_function(
                    "window.events.some(e => e.type === 'complete')", timeout=30_000
                )
                events = await page.evaluate("window.events")
                opened = await page.evaluate("window.opened")
            await wait_until(lambda: h.service.sessions.active == 0)
    seqs = [int(e["id"].split(".")[1]) for e in events]
    assert seqs == list(range(len(events)))  # every event once, in order, none lost
    assert [e["type"] for e in events].count("complete") == 1
    assert opened == 2 and proxy.connections >= 2  # it did reconnect
    assert llm.calls == 3 and search.calls == 3
    assert analyses(h) == 1
    assert h.telemetry.value("fit_check.requests", status="success") == 1
    servers = [s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER]
    resumed = [s for s in servers if "fit_check.resumed_after" in (s.attributes or {})]
    assert resumed and {s.context.trace_id for s in servers} == {resumed[0].context.trace_id}
