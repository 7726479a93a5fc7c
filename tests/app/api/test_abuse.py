"""Cheap abuse and what a runaway model sends, over real sockets on loopback.

The attacker connects from 127.0.0.1 and the honest client from 127.0.0.2: the whole
127.0.0.0/8 block is loopback on Linux, so the per-client rules see two addresses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import httpx
import pytest
from httpx_sse import aconnect_sse
from opentelemetry.trace import SpanKind

from app.pipeline.events import MAX_FRAME_BYTES
from tests.fake_apis import FakeAPI, provider_settings
from tests.fakes import counting_providers
from tests.helpers import HarnessFactory, LiveClientFactory, LiveServerFactory, attrs, wait_until

HONEST = "127.0.0.2"
STREAM = "/api/fit-check/stream"
GO = {"query": "Go"}
GET_STREAM = b"GET /api/fit-check/stream?query=Ledgerline HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def fire_and_forget(port: int) -> None:
    """A request that is sent and dropped 50 ms later, reading nothing."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET_STREAM)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()


async def first_event_after(url: str, deadline_s: float) -> float:
    """Seconds until an honest client from another address gets its first phase event,
    asking again 100 ms after each 429."""
    started = time.monotonic()
    transport = httpx.AsyncHTTPTransport(local_address=HONEST)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=5) as client:
        while time.monotonic() - started < deadline_s:
            async with client.stream("GET", STREAM, params={"query": "Ledgerline"}) as r:
                if r.status_code == 429:
                    body = json.loads(await r.aread())
                    assert body["code"] == "RATE_LIMITED"
                    assert int(r.headers["retry-after"]) >= 1
                    await asyncio.sleep(0.1)
                    continue
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("event: phase"):
                        return time.monotonic() - started
    return float("inf")


async def test_abandoned_requests_at_the_cap_do_not_keep_an_honest_client_out(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """Five requests re-opened and dropped every 0.2 s against a cap of five: before
    lingering sessions had their own allowance, each held its slot for the resume window
    and the honest client got 429 for as long as the abuse lasted."""
    providers, _, llm = counting_providers(llm_delay_s=2)
    h = harness_factory(
        providers=providers,
        max_concurrent_sessions=5,
        max_sessions_per_client=5,  # the per-client limit alone would not stop this
        resume_window_s=10,
    )
    async with live_server(h.app) as server:

        async def abuse(rounds: int) -> None:
            for _ in range(rounds):
                await asyncio.gather(*(fire_and_forget(server.port) for _ in range(5)))
                await asyncio.sleep(0.15)

        attack = asyncio.create_task(abuse(rounds=30))  # about 6 s
        await wait_until(lambda: h.service.sessions.active >= 5)  # the cap is taken
        waited = await first_event_after(server.url, deadline_s=5)
        attack.cancel()
        await asyncio.gather(attack, return_exceptions=True)
    assert waited <= 2.0, f"the honest client waited {waited:.1f} s"
    assert llm.calls <= 5 + 3  # abandoned sessions stop spending after the phase in flight


async def test_one_client_gets_its_share_and_429_says_why(live_client: LiveClientFactory) -> None:
    providers, _, _ = counting_providers(llm_delay_s=5)
    async with live_client(providers=providers, max_sessions_per_client=2) as (_, client, server):
        streams = [client.stream("GET", STREAM, params={"query": "Go"}) for _ in range(2)]
        for stream in streams:
            assert (await stream.__aenter__()).status_code == 200
        refused = await client.get(STREAM, params={"query": "Go"})
        assert refused.status_code == 429
        assert refused.json()["message"] == (
            "this client already has 2 sessions open (the limit per client is 2)"
        )
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        transport = httpx.AsyncHTTPTransport(local_address=HONEST)
        async with (
            httpx.AsyncClient(base_url=server.url, transport=transport) as other,
            other.stream("GET", STREAM, params={"query": "Go"}) as allowed,
        ):
            assert allowed.status_code == 200
        for stream in streams:
            await stream.__aexit__(None, None, None)


async def test_reconnects_are_capped_and_a_trace_stays_bounded(
    live_client: LiveClientFactory,
) -> None:
    """A client that reconnects with its own id over and over: past the cap it gets 429
    RECONNECT_LIMIT, and those refusals are not spans of the session's trace."""
    providers, _, _ = counting_providers(llm_delay_s=5)
    async with live_client(providers=providers, max_reconnects=3) as (h, client, _):
        async with aconnect_sse(client, "GET", STREAM, params={"query": "Go"}) as first:
            session = await anext(e async for e in first.aiter_sse() if e.id)
        statuses = []
        for _ in range(20):  # a storm; each one hangs up after the first event
            headers = {"Last-Event-ID": session.id}
            async with client.stream("GET", STREAM, params=GO, headers=headers) as again:
                statuses.append(again.status_code)
                if again.status_code != 200:
                    assert json.loads(await again.aread())["code"] == "RECONNECT_LIMIT"
    assert statuses == [200] * 3 + [429] * 17
    trace_id = json.loads(session.data)["trace_id"]
    server_spans = [
        s
        for s in h.telemetry.spans.get_finished_spans()
        if format(s.context.trace_id, "032x") == trace_id and "fit_check.phase" not in s.name
    ]
    assert len([s for s in server_spans if "GET" in s.name]) <= 1 + 3


async def test_an_event_id_from_the_future_is_refused_without_harming_the_session(
    live_client: LiveClientFactory,
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=0.3)
    async with live_client(providers=providers, resume_window_s=10) as (_, client, _):
        async with aconnect_sse(client, "GET", STREAM, params={"query": "Go"}) as first:
            session = await anext(e async for e in first.aiter_sse() if e.id)
        key = session.id.split(".")[0]
        forged = await client.get(STREAM, params=GO, headers={"Last-Event-ID": f"{key}.500"})
        assert forged.status_code == 400
        assert forged.json()["code"] == "INVALID_LAST_EVENT_ID"
        async with aconnect_sse(
            client, "GET", STREAM, params=GO, headers={"Last-Event-ID": session.id}
        ) as owner:
            events = [e.event async for e in owner.aiter_sse() if e.id]
    assert events[-1] == "complete"


async def test_a_runaway_answer_is_cut_and_a_fast_reader_gets_a_whole_report(
    live_server: LiveServerFactory,
    live_client: LiveClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20,000 chunks of 2,000 characters against a 4 KiB replay buffer: the answer is cut
    at the character cap (and the provider's stream closed), the report says so, no frame
    is over the stated size, and a reader that keeps up gets every event and the end."""
    fake = FakeAPI(flood=(20_000, 2_000))
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    async with (
        live_server(fake.app()) as api,
        live_client(
            **provider_settings(api.url),
            replay_buffer_bytes=4096,
            llm_max_answer_chars=50_000,
        ) as (h, c, _),
        aconnect_sse(c, "GET", STREAM, params=GO) as source,
    ):
        events = [(e.event, e.data) async for e in source.aiter_sse() if e.id]
    assert events[-1][0] == "complete"
    report = "".join(json.loads(d)["chunk"] for name, d in events if name == "response")
    assert report.startswith("lorem ipsum")
    assert report.endswith("characters: the model wrote more.)*\n")
    assert len(report) < 50_000 + 200
    assert max(len(d) for _, d in events) < MAX_FRAME_BYTES
    chats = [s for s in h.telemetry.spans.get_finished_spans() if s.name.startswith("chat ")]
    assert [attrs(s)["gen_ai.response.finish_reasons"] for s in chats] == [("length",)] * 3
    ended_span_warnings = [r.getMessage() for r in caplog.records if "ended span" in r.getMessage()]
    assert ended_span_warnings == []


async def test_a_reader_that_stops_reading_ends_its_span_with_the_reason(
    harness_factory: HarnessFactory,
    live_server: LiveServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request span of a cut reader used to end with status UNSET and no outcome, and
    the SDK warned later of attributes set on an ended span."""
    fake = FakeAPI(flood=(20_000, 2_000))
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    async with live_server(fake.app()) as api:
        h = harness_factory(
            **provider_settings(api.url),
            llm_max_answer_chars=1_048_576,
            slow_reader_s=0.5,
            resume_window_s=0.5,
        )
        async with live_server(h.app) as server:
            # Small kernel buffers on both ends (an accepted socket inherits the listening
            # socket's), so the megabytes of the report cannot all sit in them.
            for listening in server.server.servers[0].sockets:
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            await asyncio.get_running_loop().sock_sendall(sock, GET_STREAM)  # and reads nothing
            await wait_until(lambda: h.service.sessions.active == 1)
            await wait_until(lambda: h.service.sessions.active == 0, timeout_s=20)
            sock.close()
    spans = h.telemetry.spans.get_finished_spans()
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert request.status.status_code.name == "ERROR"
    assert attrs(request)["fit_check.outcome"] == "cancelled"
    assert attrs(request)["fit_check.cancel_reason"] == "slow_reader"
    ended_span_warnings = [r.getMessage() for r in caplog.records if "ended span" in r.getMessage()]
    assert ended_span_warnings == []


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(
    live_client: LiveClientFactory,
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=5)
    async with live_client(
        providers=providers, max_sessions_per_client=1, forwarded_allow_ips=["127.0.0.1"]
    ) as (_, proxy, _):

        def through(client: str) -> dict[str, str]:
            return {"X-Forwarded-For": client}

        first = proxy.stream("GET", STREAM, params=GO, headers=through("203.0.113.7"))
        assert (await first.__aenter__()).status_code == 200
        same = await proxy.get(STREAM, params=GO, headers=through("203.0.113.7"))
        assert same.status_code == 429
        async with proxy.stream("GET", STREAM, params=GO, headers=through("203.0.113.8")) as other:
            assert other.status_code == 200
        await first.__aexit__(None, None, None)
