"""Sessions shared by two replicas through a real Redis (``redis-server`` on loopback):
resume on the other replica, one trace, a producer that stops, the cap across replicas,
and Redis faults. The replicas are two apps in this process, each with its own in-memory
telemetry, on real sockets. Marked e2e: ``make e2e`` installs ``redis-server``."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from opentelemetry.trace import SpanKind

from app.pipeline.event_ids import parse_last_event_id
from app.pipeline.session import SessionRun
from tests.app.store.redis_server import RedisServer
from tests.fakes import counting_providers
from tests.helpers import Harness, HarnessFactory, LiveServer, attrs, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="make e2e installs it"),
]

STREAM = "/api/fit-check/stream"
HOST = {"Host": "127.0.0.1"}


@dataclass
class Replica:
    harness: Harness
    server: LiveServer
    client: httpx.AsyncClient


@pytest.fixture
async def replicas(
    harness_factory: HarnessFactory, redis_server: RedisServer
) -> AsyncIterator[Any]:
    """``make(count, llm_delay_s, **settings)``: replicas sharing ``redis_server``, each
    with counting providers whose LLM calls take ``llm_delay_s``."""
    started: list[Replica] = []

    async def make(count: int = 2, llm_delay_s: float = 0.0, **overrides: Any) -> list[Replica]:
        settings: dict[str, Any] = {
            "redis_url": redis_server.url,
            "producer_lease_s": 1.0,
            "resume_window_s": 3.0,
            **overrides,
        }
        for _ in range(count):
            providers, _search, _llm = counting_providers(llm_delay_s=llm_delay_s)
            harness = harness_factory(providers=providers, **settings)
            server = LiveServer(harness.app)
            await server.__aenter__()
            client = httpx.AsyncClient(base_url=server.url, headers=HOST, timeout=30)
            started.append(Replica(harness, server, client))
        return started[-count:]

    yield make
    for replica in started:
        await replica.client.aclose()
        await replica.server.__aexit__()


async def read(
    client: httpx.AsyncClient,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    query: str = "Senior Python engineer, Kafka",
) -> tuple[int, list[ServerSentEvent]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[ServerSentEvent] = []
    params = {"query": query}
    async with aconnect_sse(client, "GET", STREAM, params=params, headers=headers) as source:
        status = source.response.status_code
        if status != 200:
            await source.response.aread()
            return status, events
        async for sse in source.aiter_sse():
            if not (sse.data or sse.id):
                continue
            events.append(sse)
            if stop_after is not None and len(events) >= stop_after:
                break
    return status, events


def seqs(events: list[ServerSentEvent]) -> list[int]:
    return [p.seq for e in events if (p := parse_last_event_id(e.id)) is not None]


def sessions(replica: Replica) -> list[SessionRun]:
    return replica.harness.service.sessions.all()


async def test_a_reconnect_on_the_other_replica_reads_on_in_the_same_trace(
    replicas: Any,
) -> None:
    a, b = await replicas(2, llm_delay_s=0.2)
    status, first = await read(a.client, stop_after=4)
    assert status == 200
    status, rest = await read(b.client, last_event_id=first[-1].id)
    assert status == 200
    events = first + rest
    assert seqs(events) == list(range(len(events)))
    assert rest[-1].event == "complete" and rest[-1].id.endswith(".end")
    assert {e.event for e in events} >= {"session", "phase", "phase_complete", "complete"}
    # One analysis, run by A; B only read.
    await wait_until(lambda: not sessions(a), timeout_s=10)
    assert a.harness.telemetry.value("fit_check.requests", status="success") == 1
    assert b.harness.telemetry.value("fit_check.requests", status="success") == 0
    # B's server span is a child of A's root: one trace for the session.
    trace_id = events[0].json()["trace_id"]
    resumed = [
        s
        for s in b.harness.telemetry.finished_spans()
        if s.kind == SpanKind.SERVER and "fit_check.resumed_after" in attrs(s)
    ]
    assert len(resumed) == 1
    assert format(resumed[0].context.trace_id, "032x") == trace_id
    assert attrs(resumed[0])["fit_check.resumed_after"] == seqs(first)[-1]
    assert attrs(resumed[0])["session_id"] == events[0].json()["session_id"]


async def test_a_terminal_or_unknown_id_gets_204_on_any_replica(replicas: Any) -> None:
    a, b = await replicas(2)
    _, events = await read(a.client)
    assert events[-1].event == "complete"
    status, _ = await read(b.client, last_event_id=events[-1].id)
    assert status == 204
    status, _ = await read(b.client, last_event_id="AAAAAAAAAAAAAAAA.3")
    assert status == 204


async def test_a_producer_that_stops_renewing_ends_the_remote_reader_with_interrupted(
    replicas: Any,
) -> None:
    a, b = await replicas(2, llm_delay_s=0.5)
    _, first = await read(a.client, stop_after=3)
    (run,) = sessions(a)
    # The producer "dies": its copy to the store stops for good, and its lease runs out.
    mirror = run._mirror
    assert mirror is not None
    mirror._stopping = True
    mirror.wake()
    run._mirror = None
    started = time.monotonic()
    status, rest = await read(b.client, last_event_id=first[-1].id)
    assert status == 200
    assert rest[-1].event == "error" and rest[-1].json()["code"] == "INTERRUPTED"
    assert rest[-1].id.endswith(".end")
    assert time.monotonic() - started < 1.0 + 2.0 + 1.0  # lease + grace + a read
    assert b.harness.telemetry.value("fit_check.streams.interrupted") == 1


async def test_the_cap_holds_across_replicas(replicas: Any) -> None:
    # Calls bounded generously: a slow answer under load would admit (failure mode open).
    a, b = await replicas(2, llm_delay_s=3.0, global_max_sessions=2, redis_timeout_ms=5000)
    tasks = [asyncio.create_task(read(r.client)) for r in (a, b)]
    # A session is listed here before Redis admits it: wait for both slots to be taken.
    store = a.harness.service.store
    assert store is not None
    deadline = time.monotonic() + 10
    while await store.client.zcard(store.key("cap")) < 2:
        assert time.monotonic() < deadline, "the two sessions were not admitted in time"
        await asyncio.sleep(0.01)
    for replica in (a, b):
        response = await replica.client.post(STREAM, json={"query": "Go, Postgres"})
        assert response.status_code == 429, response.text
        error = response.json()
        assert error["code"] == "RATE_LIMITED"
        assert "across all instances" in error["message"]
        assert int(response.headers["Retry-After"]) >= 1
    for task in tasks:
        task.cancel()


async def test_a_stream_in_flight_completes_while_redis_is_paused_and_health_says_so(
    replicas: Any, redis_server: RedisServer
) -> None:
    (a,) = await replicas(1, llm_delay_s=0.2, redis_timeout_ms=100)
    reading = asyncio.create_task(read(a.client))
    await wait_until(lambda: bool(sessions(a)), timeout_s=10)
    redis_server.pause()
    started = time.monotonic()
    status, events = await reading
    assert status == 200 and events[-1].event == "complete"
    assert seqs(events) == list(range(len(events)))

    async def degraded() -> bool:
        health = (await a.client.get("/api/fit-check/health")).json()
        return bool(health["session_store"]["status"] == "unavailable")

    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 5
    while not await degraded():
        assert time.monotonic() < deadline, "health did not say the store is unavailable"
        await asyncio.sleep(0.1)
    assert (await a.client.get("/api/fit-check/health")).json()["status"] == "degraded"
    redis_server.resume()
    deadline = time.monotonic() + 10
    while await degraded():
        assert time.monotonic() < deadline, "health did not recover"
        await asyncio.sleep(0.2)


async def test_redis_down_at_start_up_costs_no_stream(
    replicas: Any, redis_server: RedisServer
) -> None:
    redis_server.stop()
    (a,) = await replicas(1)
    status, events = await read(a.client)
    assert status == 200 and events[-1].event == "complete"
    health = (await a.client.get("/api/fit-check/health")).json()
    assert health["session_store"] == {"backend": "redis", "status": "unavailable"}
    redis_server.start()
    deadline = time.monotonic() + 10
    while (await a.client.get("/api/fit-check/health")).json()["session_store"]["status"] != "ok":
        assert time.monotonic() < deadline, "health did not recover"
        await asyncio.sleep(0.2)


async def test_closed_failure_mode_refuses_new_streams_while_redis_is_down(
    replicas: Any, redis_server: RedisServer
) -> None:
    (a,) = await replicas(1, redis_failure_mode="closed")
    redis_server.stop()
    deadline = time.monotonic() + 10
    while (await a.client.get("/ready")).status_code != 503:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    response = await a.client.post(STREAM, json={"query": "Go, Postgres"})
    assert response.status_code == 503
    assert response.json()["code"] == "SESSION_STORE_UNAVAILABLE"


async def test_an_ended_session_leaves_no_key_behind(
    replicas: Any, redis_server: RedisServer
) -> None:
    """Only what a verdict needs stays, for the feedback window."""
    (a,) = await replicas(1, resume_window_s=1.0, global_max_sessions=5, feedback_window_s=60)
    _, events = await read(a.client)
    assert events[-1].event == "complete"
    await wait_until(lambda: not sessions(a), timeout_s=10)
    deadline = time.monotonic() + 10
    while [k for k in redis_server.stored_keys() if not k.startswith("fit-check:fb:")]:
        assert time.monotonic() < deadline, redis_server.stored_keys()
        await asyncio.sleep(0.2)
    (verdict_key,) = redis_server.stored_keys()
    assert 0 < int(redis_server.cli("TTL", verdict_key)) <= 60


async def test_a_verdict_lands_on_any_replica_once(replicas: Any) -> None:
    a, b = await replicas(2)
    _, events = await read(a.client)
    key = events[0].id.split(".")[0]
    verdict = {"stream_key": key, "rating": "up"}
    # The other replica knows the session once its first frames are in Redis (a write
    # every 50 ms at most): a few milliseconds after the stream began, here just now.
    deadline = time.monotonic() + 5
    first = await b.client.post("/api/fit-check/feedback", json=verdict)
    while first.status_code == 404 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        first = await b.client.post("/api/fit-check/feedback", json=verdict)
    again = await a.client.post("/api/fit-check/feedback", json=verdict)
    assert first.status_code == 202, first.text
    assert again.status_code == 409
    (span,) = [s for s in b.harness.telemetry.finished_spans() if s.name == "fit_check.feedback"]
    assert format(span.context.trace_id, "032x") == events[0].json()["trace_id"]


async def test_the_budget_is_global_across_replicas(
    harness_factory: HarnessFactory, redis_server: RedisServer
) -> None:
    """One replica's spend counts against the other's admissions."""
    from app.pipeline.budget import BudgetExceeded, SpendBudget
    from app.store.redis_log import SessionStore
    from otel.testing import captured_telemetry

    telemetry = captured_telemetry().runtime.telemetry
    stores = [
        SessionStore(
            redis_server.url,
            prefix="fit-check:",
            timeout_ms=250,
            lease_s=1,
            resume_window_s=1,
            telemetry=telemetry,
        )
        for _ in range(2)
    ]
    first, second = (SpendBudget(1.0, store) for store in stores)
    await second.check()
    first.spent(1.5)
    await wait_until(lambda: redis_server.stored_keys() != [], timeout_s=5)
    with pytest.raises(BudgetExceeded):
        await second.check()
    for store in stores:
        await store.aclose()


async def test_store_calls_are_client_spans_in_the_request_and_the_copying_is_not(
    replicas: Any,
) -> None:
    a, b = await replicas(2, global_max_sessions=5)
    _, first = await read(a.client, stop_after=3)
    await read(b.client, last_event_id=first[-1].id)
    for replica, trace_id in ((a, first[0].json()["trace_id"]), (b, None)):
        spans = replica.harness.telemetry.finished_spans()
        redis_spans = [
            s
            for s in spans
            if s.kind == SpanKind.CLIENT
            and "redis" in (attrs(s).get("db.system"), attrs(s).get("db.system.name"))
        ]
        assert redis_spans, [s.name for s in spans]
        if trace_id is not None:  # admission, in the request's trace
            assert any(format(s.context.trace_id, "032x") == trace_id for s in redis_spans)
        # No XADD or EVALSHA of the copying: a handful of spans, not one per write.
        assert len(redis_spans) < 10, [s.name for s in redis_spans]
