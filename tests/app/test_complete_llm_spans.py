"""Every LLM span ends, whatever the client does, with what is known of its usage and cost
and, when cut, why: a client that leaves mid-call, one that comes back (a resumed
stream), and an instance that drains. Against the OpenAI-compatible fake, which reports
usage at the end of each answer."""

from __future__ import annotations

import asyncio

from httpx_sse import aconnect_sse
from opentelemetry.trace import SpanKind, StatusCode

from tests.app.pipeline.test_disconnects import hang_up, open_stream, read_until
from tests.fake_apis import FakeAPI, provider_settings
from tests.helpers import (
    HarnessFactory,
    LiveClientFactory,
    LiveServerFactory,
    attrs,
    llm_spans,
    wait_until,
)


async def test_a_client_that_leaves_mid_call_leaves_that_call_whole_with_its_cost(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI(chunk_gap_s=0.02)
    async with live_server(fake.app()) as api:
        # The window outlasts the call in flight, which finishes; the next is never started.
        h = harness_factory(
            **provider_settings(api.url), llm_model="gpt-4o-mini", resume_window_s=1.5
        )
        async with live_server(h.app) as server:
            reader, writer = await open_stream(server.url)
            await read_until(reader, b'event: phase\r\ndata: {"phase":"skeptical_comparison"')
            await hang_up(writer)
            await wait_until(
                lambda: h.telemetry.value("fit_check.requests", status="cancelled") == 1,
                timeout_s=10,
            )
    (call,) = llm_spans(h)  # the call in flight finished; no other was started
    assert call.status.status_code is not StatusCode.ERROR
    assert attrs(call)["gen_ai.usage.output_tokens"] > 0
    assert attrs(call)["fit_check.cost_usd"] > 0
    (request,) = [s for s in h.telemetry.finished_spans() if s.kind == SpanKind.SERVER]
    assert attrs(request)["fit_check.cancel_reason"] == "client_gone"
    assert attrs(request)["fit_check.cost_usd"] == attrs(call)["fit_check.cost_usd"]
    assert h.telemetry.open_spans.open == 0


async def test_a_resumed_stream_ends_every_call_with_its_cost(
    live_server: LiveServerFactory, live_client: LiveClientFactory
) -> None:
    fake = FakeAPI(chunk_gap_s=0.02)
    async with (
        live_server(fake.app()) as api,
        live_client(**provider_settings(api.url), llm_model="gpt-4o-mini") as (h, client, _),
    ):
        last = ""
        params = {"query": "Python, Kafka"}
        async with aconnect_sse(client, "GET", "/api/fit-check/stream", params=params) as s:
            async for sse in s.aiter_sse():
                last = sse.id or last
                if sse.event == "phase" and "skills_matching" in sse.data:
                    break
        headers = {"Last-Event-ID": last}
        async with aconnect_sse(
            client, "GET", "/api/fit-check/stream", params=params, headers=headers
        ) as s:
            events = [sse async for sse in s.aiter_sse() if sse.data]
    assert events[-1].event == "complete"
    calls = llm_spans(h)
    assert len(calls) == 3
    assert all(attrs(c)["fit_check.cost_usd"] > 0 for c in calls)
    assert events[-1].json()["cost_usd"] > 0
    assert h.telemetry.open_spans.open == 0


async def test_a_drained_instance_ends_the_call_in_flight_as_cancelled(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI(chunk_gap_s=0.2)
    async with live_server(fake.app()) as api:
        h = harness_factory(
            **provider_settings(api.url), llm_model="gpt-4o-mini", shutdown_grace_s=0
        )
        async with live_server(h.app) as server:
            reader, writer = await open_stream(server.url)
            await read_until(reader, b'event: phase\r\ndata: {"phase":"skeptical_comparison"')
            drained = asyncio.create_task(h.service.drain())
            await read_until(reader, b"SHUTTING_DOWN")
            await drained
            await hang_up(writer)
    (call,) = llm_spans(h)
    assert call.status.status_code is StatusCode.ERROR
    assert attrs(call)["error.type"] == "cancelled"
    # The fake reports usage only with its last chunk: a cut call has none to price, and
    # says so rather than counting 0.
    assert "fit_check.cost_usd" not in attrs(call)
    assert "gen_ai.usage.output_tokens" not in attrs(call)
    assert h.telemetry.open_spans.open == 0
