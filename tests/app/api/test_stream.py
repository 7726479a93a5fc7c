"""The stream endpoint end to end: event order, headers, the GET variant, a real server."""

from __future__ import annotations

import httpx

from app.pipeline.events import PHASES
from tests.fakes import counting_providers
from tests.helpers import Events, Harness, LiveClientFactory, parse_sse

QUERY = {"query": "Senior Python engineer, FastAPI, Kubernetes"}


def assert_complete_stream(events: Events) -> None:
    names = [name for name, _ in events]
    assert names[0] == "session"
    assert names[-1] == "complete"
    assert sum(name in ("complete", "error") for name in names) == 1
    started = [data["phase"] for name, data in events if name == "phase"]
    completed = [data for name, data in events if name == "phase_complete"]
    assert started == list(PHASES)
    assert [c["phase"] for c in completed] == list(PHASES)
    assert all(isinstance(c["duration_ms"], int) and c["duration_ms"] >= 0 for c in completed)
    report = "".join(data["chunk"] for name, data in events if name == "response")
    assert "Fit report" in report and "python" in report.lower()
    assert names.index("response") > names.index("phase_complete")


async def test_post_streams_five_phases_and_a_report(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/fit-check/stream", json=QUERY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert_complete_stream(events)
    session_id = events[0][1]["session_id"]
    assert response.headers["x-session-id"] == session_id
    assert events[-1][1]["session_id"] == session_id


async def test_given_session_id_is_used_and_thoughts_can_be_turned_off(
    client: httpx.AsyncClient,
) -> None:
    body = {**QUERY, "session_id": "acme:42", "include_thoughts": False}
    response = await client.post("/api/fit-check/stream", json=body)
    events = parse_sse(response.text)
    assert response.headers["x-session-id"] == "acme:42"
    assert events[0] == ("session", {"session_id": "acme:42", "trace_id": events[0][1]["trace_id"]})
    assert not [name for name, _ in events if name == "thought"]


async def test_thoughts_are_streamed_by_default(client: httpx.AsyncClient) -> None:
    events = parse_sse((await client.post("/api/fit-check/stream", json=QUERY)).text)
    thoughts = [data for name, data in events if name == "thought"]
    assert thoughts and {"step", "type", "content"} <= set(thoughts[0])
    assert any(t.get("tool") == "search" for t in thoughts)


async def test_same_input_gives_the_same_report(client: httpx.AsyncClient) -> None:
    def report(text: str) -> str:
        return "".join(d["chunk"] for n, d in parse_sse(text) if n == "response")

    first = await client.post("/api/fit-check/stream", json=QUERY)
    second = await client.post("/api/fit-check/stream", json=QUERY)
    assert report(first.text) == report(second.text)


async def test_get_variant_serves_the_same_stream(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/fit-check/stream", params={**QUERY, "session_id": "from-get"})
    assert response.status_code == 200
    assert response.headers["x-session-id"] == "from-get"
    assert_complete_stream(parse_sse(response.text))


async def test_head_on_the_stream_opens_no_session(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    response = await client.head("/api/fit-check/stream", params=QUERY)
    assert response.status_code == 405
    assert harness.service.sessions.active == 0
    assert harness.telemetry.value("fit_check.requests", status="success") == 0


async def test_full_stream_over_a_real_uvicorn_server(live_client: LiveClientFactory) -> None:
    async with (
        live_client() as (harness, c, _),
        c.stream("POST", "/api/fit-check/stream", json=QUERY) as response,
    ):
        assert response.status_code == 200
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert_complete_stream(parse_sse(text))
    assert harness.service.sessions.active == 0


async def test_health_reports_breakers_and_sessions(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/fit-check/health")).json()
    assert body["status"] == "healthy"
    assert body["service"] == "fit-check"
    assert body["agent_ready"] is True
    assert body["active_sessions"] == 0
    assert body["circuit_breakers"] == {"search": "closed", "llm": "closed"}
    assert isinstance(body["timestamp"], float)
    assert (await client.get("/health")).json() == {"status": "ok"}


async def test_openapi_documents_the_stream_and_its_events(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    post = schema["paths"]["/api/fit-check/stream"]["post"]
    assert "text/event-stream" in post["responses"]["200"]["content"]
    for model in (
        "SessionEvent",
        "PhaseEvent",
        "ThoughtEvent",
        "PhaseCompleteEvent",
        "ResponseEvent",
        "CompleteEvent",
        "ErrorEvent",
    ):
        assert model in schema["components"]["schemas"]
    assert (await client.get("/docs")).status_code == 200


async def test_idle_streams_get_comment_pings(live_client: LiveClientFactory) -> None:
    providers, _, _ = counting_providers(llm_delay_s=0.5)
    async with (
        live_client(providers=providers, sse_ping_s=0.1) as (_, c, _),
        c.stream("POST", "/api/fit-check/stream", json=QUERY) as response,
    ):
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert ": ping" in text
    assert_complete_stream(parse_sse(text))
