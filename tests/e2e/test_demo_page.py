"""The newcomer's pages in a real browser: the demo at ``/``, and ``/docs`` with no internet."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import httpx
import pytest
from opentelemetry.trace import SpanKind
from playwright.async_api import Request, Route, expect

from app.pipeline.events import PHASES
from tests.e2e.chromium import chromium_page
from tests.fake_apis import FakeAPI
from tests.fakes import counting_providers
from tests.helpers import HarnessFactory, LiveServerFactory, attrs, wait_until

pytestmark = pytest.mark.e2e

HOSTILE_REPORT = (
    '# Report <img src=x onerror="window.pwned=1">\n\n'
    "**Strong** fit <script>window.pwned=2</script> and [a link](javascript:alert(1))\n\n"
    "- item with `<b>code</b>`\n"
)


async def test_a_deep_link_streams_all_phases_the_report_and_a_trace_link(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=0.05)
    h = harness_factory(providers=providers)
    async with live_server(h.app) as server, chromium_page() as page:
        await page.goto(f"{server.url}/?query=Senior%20Python%20engineer%2C%20Kafka")
        await expect(page.locator("#status")).to_have_text(re.compile("^Done in"), timeout=30_000)
        done = await page.locator("#phases li.done").evaluate_all(
            "items => items.map(i => i.dataset.phase)"
        )
        report = await page.locator("#report").inner_text()
        href = await page.locator("#trace-link").get_attribute("href")
        await wait_until(lambda: h.service.sessions.active == 0)
    assert done == list(PHASES)
    assert "Fit report" in report
    assert href is not None
    # No trace back-end: the service's own trace page (test_demo_page_trace.py opens it).
    match = re.fullmatch(r"/trace/([0-9a-f]{32})", href)
    assert match, href
    # The page closed its EventSource on the terminal event: one stream request, no
    # reconnect afterwards (which would be a second server span).
    streams = [s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER]
    assert len(streams) == 1
    assert format(streams[0].context.trace_id, "032x") == match.group(1)
    assert attrs(streams[0])["fit_check.outcome"] == "success"


async def test_a_hostile_report_is_shown_as_text_never_as_markup(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI(reply=HOSTILE_REPORT)
    async with live_server(fake.app()) as api:
        h = harness_factory(llm_provider="openai", openai_base_url=f"{api.url}/v1")
        async with live_server(h.app) as server, chromium_page() as page:
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            await page.goto(f"{server.url}/?query=Python")
            await expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=30_000)
            report = page.locator("#report")
            text = await report.inner_text()
            injected = await report.locator("img, script, a, b, iframe").count()
            pwned = await page.evaluate("() => window.pwned ?? null")
    assert injected == 0
    assert pwned is None and not dialogs
    assert '<img src=x onerror="window.pwned=1">' in text
    assert "<script>window.pwned=2</script>" in text
    assert "<b>code</b>" in text


@pytest.mark.parametrize(
    "query",
    ["x" * 2001, "Acme \u202egnp.exe Corp", "Acme\x00Corp"],
    ids=["too-long", "bidi-override", "nul"],
)
async def test_a_refused_deep_link_shows_the_apis_reason(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, query: str
) -> None:
    h = harness_factory()
    params = urlencode({"query": query, "include_thoughts": "true"})
    async with live_server(h.app) as server, chromium_page() as page:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            refusal = await client.get(f"/api/fit-check/stream?{params}")
        await page.goto(f"{server.url}/?{urlencode({'query': query})}")
        status = page.locator("#status")
        # An EventSource cannot read a 422's body: the page asks again with fetch.
        await expect(status).to_have_text(
            f"{refusal.json()['code']}: {refusal.json()['message']}", timeout=15_000
        )
        await expect(status).to_have_class("error")
        await expect(page.locator("#go")).to_be_enabled()
    assert refusal.status_code == 422


@pytest.mark.parametrize(
    ("path", "marker"), [("/docs", "/api/fit-check/stream"), ("/redoc", "stream")]
)
async def test_the_api_docs_render_with_no_internet(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, path: str, marker: str
) -> None:
    h = harness_factory()
    outside: list[str] = []

    async def loopback_only(route: Route, request: Request) -> None:
        if request.url.startswith("http://127.0.0.1:"):
            await route.continue_()
        else:
            outside.append(request.url)
            await route.abort("internetdisconnected")

    async with live_server(h.app) as server, chromium_page() as page:
        await page.route("**/*", loopback_only)
        await page.goto(f"{server.url}{path}")
        await expect(page.get_by_text(marker).locator("visible=true").first).to_be_visible(
            timeout=30_000
        )
    assert outside == []


async def test_the_verdict_buttons_record_one_verdict_in_the_sessions_trace(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """After the analysis, "Wrong" posts the stream's key: the verdict lands in the
    session's trace, once, and the page says so; the cost is on the status line."""
    providers, _, _ = counting_providers()
    h = harness_factory(providers=providers)
    async with live_server(h.app) as server, chromium_page() as page:
        await page.goto(f"{server.url}/?query=Go%2C%20Postgres")
        await expect(page.locator("#status")).to_have_text(
            re.compile(r"^Done in .* LLM cost \$0\.0000\.$"), timeout=30_000
        )
        await expect(page.locator("#feedback")).to_be_visible()
        await page.locator("#rate-down").click()
        await expect(page.locator("#feedback-note")).to_have_text("Thanks: recorded in the trace.")
        await expect(page.locator("#rate-up")).to_be_disabled()
    (root,) = [s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER][:1]
    verdicts = [s for s in h.telemetry.finished_spans() if s.name == "fit_check.feedback"]
    assert len(verdicts) == 1
    assert verdicts[0].context.trace_id == root.context.trace_id
    assert attrs(verdicts[0])["gen_ai.evaluation.score.label"] == "down"
