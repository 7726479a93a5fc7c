"""EventSource reconnects: ids, the retry hint, resuming with Last-Event-ID, and 204."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from opentelemetry.trace import SpanKind, StatusCode

from app.pipeline.event_ids import parse_last_event_id
from tests.fakes import counting_providers
from tests.helpers import (
    Harness,
    HarnessFactory,
    LiveClientFactory,
    attrs,
    ended_ns,
    in_process_client,
    parent_id,
    session_tasks,
    wait_until,
)

STREAM = "/api/fit-check/stream"
QUERY = {"query": "Senior Python engineer, Kafka", "session_id": "resume-1"}
STATUSES = ("success", "error", "timeout", "cancelled")


def requests_counted(h: Harness) -> float:
    return sum(h.telemetry.value("fit_check.requests", status=s) for s in STATUSES)


async def read_events(
    client: httpx.AsyncClient,
    *,
    last_event_id: str | None = None,
    stop_after: str | None = None,
) -> tuple[httpx.Response, list[ServerSentEvent]]:
    """Stream the GET form; with ``stop_after``, hang up right after that event type."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[ServerSentEvent] = []
    async with aconnect_sse(client, "GET", STREAM, params=QUERY, headers=headers) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            return source.response, events
        async for sse in events_of(source.aiter_sse()):
            events.append(sse)
            if sse.event == stop_after:
                break
    return source.response, events


async def events_of(stream: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
    """The events, without the block that only carries the retry hint."""
    async for sse in stream:
        if sse.data or sse.id:
            yield sse


def seqs(events: list[ServerSentEvent]) -> list[int]:
    parsed = [parse_last_event_id(e.id) for e in events]
    assert all(p is not None for p in parsed), [e.id for e in events]
    return [p.seq for p in parsed if p is not None]


async def test_every_event_has_an_id_and_the_first_frame_a_retry_hint(
    harness_factory: HarnessFactory,
) -> None:
    h = harness_factory(sse_retry_ms=1500)
    async with in_process_client(h.app) as client:
        response = await client.post(STREAM, json=QUERY)
    frames = response.text.split("\r\n\r\n")
    assert frames[0] == "retry: 1500"
    events = [f for f in frames[1:] if f.strip() and not f.startswith(":")]
    ids = [f.split("\r\n")[0] for f in events]
    assert all(i.startswith("id: ") for i in ids), events[0]
    parsed = [p for i in ids if (p := parse_last_event_id(i[4:])) is not None]
    assert len(parsed) == len(ids)
    assert [p.seq for p in parsed] == list(range(len(events)))
    assert len({p.key for p in parsed}) == 1
    assert [p.terminal for p in parsed] == [False] * (len(events) - 1) + [True]
    assert "event: complete" in events[-1]


@pytest.mark.parametrize(
    "last_event_id",
    [
        "AAAAAAAAAAAAAAAA.7.end",  # a terminal id: decidable on any instance
        "AAAAAAAAAAAAAAAA.7",  # a stream this instance does not have
    ],
)
async def test_a_reconnect_with_nothing_to_resume_gets_204_and_starts_nothing(
    harness_factory: HarnessFactory, last_event_id: str
) -> None:
    providers, search, llm = counting_providers()
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        response = await client.get(STREAM, params=QUERY, headers={"Last-Event-ID": last_event_id})
        posted = await client.post(STREAM, json=QUERY, headers={"Last-Event-ID": last_event_id})
    assert response.status_code == posted.status_code == 204
    assert response.content == b""
    assert llm.calls == search.calls == 0
    assert requests_counted(h) == 0


@pytest.mark.parametrize("value", ["garbage", "5", "AAAAAAAAAAAAAAAA.x", "A" * 65])
async def test_a_last_event_id_we_never_sent_is_a_clear_4xx(
    harness_factory: HarnessFactory, value: str
) -> None:
    providers, _, llm = counting_providers()
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        response = await client.get(STREAM, params=QUERY, headers={"Last-Event-ID": value})
    assert response.status_code in (400, 422)
    assert response.json()["code"] in ("INVALID_LAST_EVENT_ID", "INVALID_QUERY")
    assert value not in response.text
    assert llm.calls == 0
    assert h.telemetry.value("fit_check.rejected_requests", reason="invalid_request") == 1


async def test_the_terminal_event_of_a_finished_stream_ends_reconnects(harness: Harness) -> None:
    async with in_process_client(harness.app) as client:
        _, events = await read_events(client)
        assert events[-1].event == "complete" and events[-1].id.endswith(".end")
        again, _ = await read_events(client, last_event_id=events[-1].id)
        earlier, _ = await read_events(client, last_event_id=events[3].id)  # settled: gone
    assert again.status_code == earlier.status_code == 204
    assert requests_counted(harness) == 1


async def test_a_cut_stream_resumes_where_it_was_with_one_analysis_and_one_trace(
    live_client: LiveClientFactory, json_log: io.StringIO
) -> None:
    providers, search, llm = counting_providers(llm_delay_s=0.1, llm_chunk_delay_s=0.01)
    async with live_client(providers=providers, resume_window_s=10) as (h, client, _):
        _, first = await read_events(client, stop_after="phase_complete")
        assert h.service.sessions.active == 1  # waiting for its client to come back
        resumed, rest = await read_events(client, last_event_id=first[-1].id)
        await wait_until(lambda: h.service.sessions.active == 0)
    assert resumed.status_code == 200
    events = first + rest
    assert seqs(events) == list(range(len(events)))  # no gap, no duplicate
    names = [e.event for e in events]
    assert names[0] == "session" and names[-1] == "complete"
    assert names.count("phase") == 5 and names.count("complete") == 1
    assert llm.calls == 3 and search.calls == 3  # one analysis
    assert requests_counted(h) == 1
    assert h.telemetry.value("fit_check.requests", status="success") == 1

    trace_id = json.loads(events[0].data)["trace_id"]
    servers = [s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER]
    assert len(servers) == 2
    assert {format(s.context.trace_id, "032x") for s in servers} == {trace_id}
    root = next(s for s in servers if s.parent is None)
    reconnect = next(s for s in servers if s.parent is not None)
    assert parent_id(reconnect) == root.context.span_id
    assert attrs(reconnect)["fit_check.resumed_after"] == seqs(first)[-1]
    assert attrs(reconnect)["session_id"] == "resume-1"
    assert attrs(root)["fit_check.outcome"] == "success"
    assert ended_ns(root) >= ended_ns(reconnect) - 50_000_000  # the root spans the session
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    resumed_lines = [line for line in lines if line["message"] == "Stream resumed"]
    assert [(r["session_id"], r["after_event"], r["trace_id"]) for r in resumed_lines] == [
        ("resume-1", seqs(first)[-1], trace_id)
    ]


async def test_nobody_back_within_the_window_counts_one_cancelled_and_frees_all(
    live_client: LiveClientFactory, json_log: io.StringIO
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=0.2, llm_chunk_delay_s=0.01)
    async with live_client(providers=providers, resume_window_s=0.3) as (h, client, _):
        _, first = await read_events(client, stop_after="phase")
        assert h.service.sessions.active == 1
        assert h.telemetry.value("fit_check_active_sessions") == 1
        await wait_until(lambda: h.service.sessions.active == 0)
        late, _ = await read_events(client, last_event_id=first[-1].id)
        calls = llm.calls
        await wait_until(lambda: not session_tasks())  # nothing left that could call the LLM
    assert late.status_code == 204
    assert llm.calls == calls and llm.active == 0
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 1
    assert requests_counted(h) == 1
    assert h.telemetry.value("fit_check_active_sessions") == 0
    assert h.telemetry.open_spans.open == 0
    root = next(s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER)
    assert attrs(root)["fit_check.cancel_reason"] == "client_gone"
    assert (root.status.status_code, root.status.description) == (StatusCode.ERROR, "cancelled")
    messages = [json.loads(line)["message"] for line in json_log.getvalue().splitlines()]
    assert messages.count("Nobody came back for the session; dropping it") == 1


async def test_a_session_whose_client_is_away_spends_nothing_until_it_is_back(
    live_client: LiveClientFactory,
) -> None:
    """Lingering sessions stop spending after the phase in flight: the reconnect then
    gets the whole analysis, and a client that never comes back cost no LLM call."""
    providers, _, llm = counting_providers(llm_delay_s=0.05)
    async with live_client(providers=providers, resume_window_s=10) as (h, client, _):
        _, first = await read_events(client, stop_after="session")
        await wait_until(lambda: h.service.sessions.all()[0].lingering_since is not None)
        await wait_until(lambda: llm.active == 0)
        spent = llm.calls  # the phase in flight when the client left, if any
        # Nothing to poll: what is checked is that no call starts while nobody reads (the
        # session's task is alive, parked until a reader comes back), so a bounded wait of
        # six LLM calls' time.
        await asyncio.sleep(0.3)
        assert llm.calls == spent <= 1
        assert h.service.sessions.active == 1
        resumed, rest = await read_events(client, last_event_id=first[-1].id)
    assert resumed.status_code == 200
    assert rest[-1].event == "complete"
    assert seqs(first + rest) == list(range(len(first + rest)))
    assert llm.calls == 3
    assert h.telemetry.value("fit_check.requests", status="success") == 1


async def test_a_second_reader_takes_the_stream_over(live_client: LiveClientFactory) -> None:
    """A reconnect arriving before the server noticed the old connection died."""
    providers, _, _ = counting_providers(llm_delay_s=0.3)
    async with (
        live_client(providers=providers) as (h, client, _),
        aconnect_sse(client, "GET", STREAM, params=QUERY) as old,
    ):
        stream = events_of(old.aiter_sse())
        session = await anext(stream)
        _, rest = await read_events(client, last_event_id=session.id)
        left = [sse async for sse in stream]  # ends without a terminal event
    assert rest[-1].event == "complete"
    assert not [e for e in left if e.event in ("complete", "error")]
    assert requests_counted(h) == 1


async def test_a_reconnect_older_than_the_replay_buffer_gets_204(
    live_client: LiveClientFactory,
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=0.05)
    async with live_client(
        providers=providers,
        replay_buffer_bytes=4096,
        resume_window_s=10,
    ) as (h, client, _):
        # Up to the report's phase, past 4 KiB of frames sent: the oldest are gone.
        async with aconnect_sse(client, "GET", STREAM, params=QUERY) as source:
            first = []
            async for sse in events_of(source.aiter_sse()):
                first.append(sse)
                if sse.event == "phase" and "generate_results" in sse.data:
                    break
        gone, _ = await read_events(client, last_event_id=first[0].id)
        # Nobody can read that session any more: it ends now, not at the end of its window.
        await wait_until(lambda: h.service.sessions.active == 0)
    assert gone.status_code == 204
    assert h.telemetry.value("fit_check.requests", status="cancelled") == 1
