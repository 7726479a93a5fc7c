"""The demo page when its stream is lost: it stops reconnecting, and says honestly why.

The service sits behind a front on a fixed loopback address, the one the browser knows.
Taking the front down is a crash as the browser sees it (every connection cut, new ones
refused); putting it up in front of another service is a restart.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import expect

from tests.e2e.chromium import chromium_page
from tests.e2e.relay import analyses, relay
from tests.fakes import counting_providers
from tests.helpers import HarnessFactory, LiveServerFactory

if TYPE_CHECKING:
    from playwright.async_api import Page, Request

pytestmark = pytest.mark.e2e

#: The page's own limit (MAX_FAILED_RECONNECTS in demo.js).
FAILED_RECONNECTS = 5
#: Every EventSource the page makes, so a test can read its state.
SOURCES_PROBE = """(() => {
  const Native = window.EventSource;
  window.eventSources = [];
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); window.eventSources.push(this); }
  };
})();
"""


class Front:
    """A TCP front on a fixed loopback port: ``down()`` cuts every connection and refuses
    new ones; ``up(port)`` serves again on the same port, in front of ``port``."""

    def __init__(self) -> None:
        self.port = 0
        self._target = 0
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.WriteTransport] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self, target_port: int) -> None:
        self._target = target_port
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = self._server
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.transport.abort()
            return
        if server is None or server is not self._server:  # went down meanwhile
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._transports += [writer.transport, up_writer.transport]

        await relay((reader, writer), (up_reader, up_writer))


async def start_analysis(page: Page, front: Front) -> list[str]:
    """Open the page's deep link through the front and wait until the stream is under way;
    returns the list the page's stream requests are recorded in."""
    requests: list[str] = []

    def record(request: Request) -> None:
        if "/api/fit-check/stream" in request.url:
            requests.append(request.url)

    page.on("request", record)
    await page.add_init_script(SOURCES_PROBE)
    await page.goto(f"{front.url}/?query=Senior%20Python%20engineer")
    await expect(page.locator("#phases li.done").first).to_be_visible(timeout=15_000)
    assert await page.locator("#status").inner_text() == "Streaming..."
    return requests


async def test_a_service_that_is_gone_stops_the_reconnects_and_says_so(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=1.0)
    h = harness_factory(providers=providers, sse_retry_ms=100, resume_window_s=0.5)
    front = Front()
    async with live_server(h.app) as server, chromium_page() as page:
        await front.up(server.port)
        try:
            requests = await start_analysis(page, front)
            await front.down()
            status = page.locator("#status")
            await expect(status).to_have_text(
                "Lost the connection to the service; it may have restarted. "
                "Run the analysis again.",
                timeout=20_000,
            )
            await expect(status).to_have_class("error")
            await expect(page.locator("#go")).to_be_enabled()
            states = await page.evaluate("window.eventSources.map(s => s.readyState)")
            attempts = len(requests)
        finally:
            await front.down()
    assert states == [2]  # CLOSED: the page stopped the browser's reconnects
    assert attempts == 1 + FAILED_RECONNECTS


async def test_a_restarted_service_is_told_apart_from_one_that_cannot_be_reached(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=1.0)
    before = harness_factory(providers=providers, sse_retry_ms=250, resume_window_s=0.5)
    after = harness_factory(sse_retry_ms=250)
    front = Front()
    async with (
        live_server(before.app) as old,
        live_server(after.app) as new,
        chromium_page() as page,
    ):
        await front.up(old.port)
        try:
            await start_analysis(page, front)
            await front.down()
            await front.up(new.port)  # the same address, a service without that session
            status = page.locator("#status")
            # Its reconnect is answered 204, yet /health answers: the service is up.
            await expect(status).to_have_text(
                "The service is up, but this analysis's stream is over (the service "
                "restarted or the stream expired): run the analysis again.",
                timeout=20_000,
            )
            await expect(status).to_have_class("error")
            await expect(page.locator("#go")).to_be_enabled()
            states = await page.evaluate("window.eventSources.map(s => s.readyState)")
        finally:
            await front.down()
    assert states == [2]
    assert analyses(after) == 0  # neither the reconnect nor the page's probe started one
