"""The demo page in Debian's Chromium, through nginx in front of two replicas sharing Redis:
its EventSource's connection is cut mid-stream, the browser reconnects on its own with
Last-Event-ID, nginx sends the reconnect to the other replica, and the page still shows
one whole analysis.

The cut is a TCP front between the browser and nginx (``Front`` of the reconnect tests)
taken down and up again: every connection of the browser's is aborted, as a lost network
does, while nginx and its round robin stay as they were.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from playwright.async_api import expect

from app.pipeline.event_ids import parse_last_event_id
from app.pipeline.events import EVENT_PAYLOADS, PHASES
from tests.e2e.chromium import chromium_page
from tests.e2e.replicas import (
    CALLS_PER_ANALYSIS,
    STREAM,
    UPSTREAM_HEADER,
    Replicas,
    replica_set_fixture,  # noqa: F401
    replicas_fixture,  # noqa: F401
)
from tests.e2e.stack import poll
from tests.e2e.test_demo_page_reconnects import Front

if TYPE_CHECKING:
    from playwright.async_api import Response

pytestmark = pytest.mark.e2e

#: Every event the page's EventSources receive, as (type, lastEventId), in order.
EVENTS_PROBE = """(() => {
  const Native = window.EventSource;
  window.seenEvents = [];
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      for (const type of TYPES) {
        this.addEventListener(type, (event) => {
          if (event instanceof MessageEvent) window.seenEvents.push([type, event.lastEventId]);
        });
      }
    }
  };
})();
""".replace("TYPES", json.dumps(list(EVENT_PAYLOADS)))


async def test_a_browser_reconnect_through_nginx_reads_on_from_the_other_replica(
    replicas: Replicas,
) -> None:
    calls = replicas.llm.chat_calls()
    front = Front()
    await front.up(replicas.nginx.port)
    streams: list[Response] = []
    try:
        async with chromium_page() as page:
            page.on("response", lambda r: streams.append(r) if STREAM in r.url else None)
            await page.add_init_script(EVENTS_PROBE)
            await page.goto(f"{front.url}/?query=Senior%20Python%20engineer")
            await expect(page.locator("#phases li.done").first).to_be_visible(timeout=15_000)
            assert await page.locator("#status").inner_text() == "Streaming..."
            assert len(streams) == 1
            producer = replicas.by_address(await streams[0].header_value(UPSTREAM_HEADER))
            other = replicas.other(producer)
            await asyncio.to_thread(replicas.steer_to, other)
            await front.down()  # the browser's connections cut mid-stream
            await front.up(replicas.nginx.port)
            await expect(page.locator("#status")).to_have_text(
                re.compile("^Done in"), timeout=30_000
            )
            seen: list[list[str]] = await page.evaluate("window.seenEvents")
            done = await page.locator("#phases li.done").evaluate_all(
                "items => items.map(i => i.dataset.phase)"
            )
            report = await page.locator("#report").inner_text()
            session_id = await page.locator("#session-id").inner_text()
            served = [await s.header_value(UPSTREAM_HEADER) for s in streams]
            statuses = [s.status for s in streams]
    finally:
        await front.down()

    assert statuses == [200, 200], statuses
    assert served == [producer.address, other.address]
    ids = [parse_last_event_id(event_id) for _, event_id in seen]
    assert all(i is not None for i in ids), seen
    parsed = [i for i in ids if i is not None]
    assert len({i.key for i in parsed}) == 1
    assert [i.seq for i in parsed] == list(range(len(parsed))), "every event once, in order"
    assert [i.terminal for i in parsed][-1] and not any(i.terminal for i in parsed[:-1])
    assert seen[-1][0] == "complete"
    assert done == list(PHASES)
    assert report.count(replicas.llm.fake.reply) == 1, report

    def resumed_on_other() -> list[dict[str, Any]]:
        lines = other.logged("Stream resumed")
        return [line for line in lines if line.get("session_id") == session_id]

    resumed = poll(resumed_on_other, timeout_s=10, every_s=0.1, what="the resume in its log")
    assert len(resumed) == 1
    assert not [x for x in producer.logged("Stream resumed") if x.get("session_id") == session_id]
    assert replicas.llm.chat_calls() - calls == CALLS_PER_ANALYSIS
