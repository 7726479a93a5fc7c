"""``make run`` with nothing else running: the demo page's trace link opens the trace, kept
in the service's memory, in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from app.pipeline.events import PHASES
from tests.e2e.chromium import chromium_page
from tests.service_process import service_process

pytestmark = pytest.mark.e2e


async def test_the_trace_link_shows_the_five_phases_with_no_back_end(tmp_path: Path) -> None:
    # `fit-check serve` as `make run` starts it: no OTEL_* or FIT_CHECK_* variable set.
    with service_process(tmp_path / "service.log") as service:
        async with chromium_page() as page:
            await page.goto(f"{service.url}/?query=Ledgerline%20Payments")
            await expect(page.locator("#status")).to_have_text(
                re.compile("^Done in"), timeout=30_000
            )
            link = page.locator("#trace-link")
            trace_id = await link.inner_text()
            async with page.expect_popup() as opened:
                await link.click()
            trace_page = await opened.value
            await expect(trace_page.locator("h1")).to_have_text(f"trace {trace_id}")
            tree = trace_page.locator("pre.trace")
            for phase in PHASES:
                await expect(tree).to_contain_text(f"fit_check.phase {phase}")
            note = await trace_page.locator("header p").inner_text()
            url = trace_page.url
            text = await tree.inner_text()
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert url == f"{service.url}/trace/{trace_id}"
    assert note.startswith("kept in this process's memory")
    assert "Ledgerline" not in text
    assert '"traces":"memory (/trace/{id}: the last 50 traces' in service.log()
