"""Provider faults, timeouts, disconnects and overload, as a client and an operator see them."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind, StatusCode

from app.providers.base import SearchResult
from tests.fakes import CountingSearch, counting_providers
from tests.helpers import (
    HarnessFactory,
    LiveClientFactory,
    attrs,
    in_process_client,
    parse_sse,
    session_tasks,
    wait_until,
)

STREAM = "/api/fit-check/stream"
QUERY = {"query": "Senior Python engineer, FastAPI, Kubernetes"}


def terminal(text: str) -> tuple[str, dict[str, Any]]:
    events = parse_sse(text)
    assert sum(n in ("complete", "error") for n, _ in events) == 1
    return events[-1]


async def test_search_failure_ends_with_search_error(harness_factory: HarnessFactory) -> None:
    providers, _search, _ = counting_providers(search_fail=True)
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        name, data = terminal((await client.post(STREAM, json=QUERY)).text)
    assert (name, data["code"]) == ("error", "SEARCH_ERROR")
    assert h.telemetry.value("fit_check.requests", status="error") == 1
    assert (
        h.telemetry.value("fit_check.phase.completions", phase="deep_research", status="error") == 1
    )
    assert h.service.sessions.active == 0


async def test_breaker_opens_fails_fast_and_recovers(harness_factory: HarnessFactory) -> None:
    providers, _, llm = counting_providers(llm_fail=True)
    h = harness_factory(
        providers=providers, breaker_failure_threshold=2, breaker_reset_timeout_s=0.2
    )
    async with in_process_client(h.app) as client:
        for _ in range(2):
            _, data = terminal((await client.post(STREAM, json=QUERY)).text)
            assert data["code"] == "LLM_ERROR"
        assert llm.calls == 2
        health = (await client.get("/api/fit-check/health")).json()
        assert health["status"] == "degraded"
        assert health["circuit_breakers"]["llm"] == "open"
        assert h.telemetry.value("fit_check_circuit_breaker_state", service="llm") == 1
        assert h.telemetry.value("fit_check_circuit_breaker_state", service="search") == 0

        _, data = terminal((await client.post(STREAM, json=QUERY)).text)
        assert data["code"] == "LLM_ERROR" and "open" in data["message"]
        assert llm.calls == 2, "an open breaker must not call the provider"

        llm.fail = False
        breaker = h.service.breakers["llm"]
        await wait_until(lambda: breaker.state.value == "half_open")
        assert h.telemetry.value("fit_check_circuit_breaker_state", service="llm") == 2
        name, _ = terminal((await client.post(STREAM, json=QUERY)).text)
        assert name == "complete"
        assert breaker.state.value == "closed"
        assert (await client.get("/api/fit-check/health")).json()["status"] == "healthy"


async def test_provider_timeout_is_a_provider_error(harness_factory: HarnessFactory) -> None:
    providers, _, _ = counting_providers(search_delay_s=5)
    h = harness_factory(providers=providers, provider_timeout_s=0.05)
    async with in_process_client(h.app) as client:
        _, data = terminal((await client.post(STREAM, json=QUERY)).text)
    assert data["code"] == "SEARCH_ERROR" and "timed out" in data["message"]


async def test_request_timeout_ends_the_stream_with_timeout(
    harness_factory: HarnessFactory,
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=5)
    h = harness_factory(providers=providers, request_timeout_s=0.2)
    async with in_process_client(h.app) as client:
        name, data = terminal((await client.post(STREAM, json=QUERY)).text)
    assert (name, data["code"]) == ("error", "TIMEOUT")
    assert h.telemetry.value("fit_check.requests", status="timeout") == 1
    assert h.telemetry.value("fit_check.requests", status="success") == 0
    assert h.service.sessions.active == 0
    assert llm.active == 0


async def test_disconnect_stops_the_pipeline_and_counts_cancelled(
    live_client: LiveClientFactory,
) -> None:
    providers, _, llm = counting_providers(llm_delay_s=0.3, llm_chunk_delay_s=0.05)
    # No resume window: the client's hang-up ends the session at once.
    async with live_client(providers=providers, resume_window_s=0) as (h, client, _):
        async with client.stream("POST", STREAM, json=QUERY) as response:
            async for line in response.aiter_lines():
                if "skeptical_comparison" in line:
                    break  # mid-phase: the LLM call is in flight
            assert h.service.sessions.active == 1
        await wait_until(lambda: h.service.sessions.active == 0)
        await wait_until(lambda: h.telemetry.value("fit_check.requests", status="cancelled") == 1)
        assert llm.active == 0
        calls = llm.calls
        await wait_until(lambda: not session_tasks())  # nothing left that could call the LLM
        assert llm.calls == calls, "the pipeline kept working for nobody"
    assert h.telemetry.value("fit_check.requests", status="success") == 0
    assert h.telemetry.value("fit_check_active_sessions") == 0
    assert h.telemetry.open_spans.open == 0
    spans = h.telemetry.finished_spans()
    root = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert attrs(root)["fit_check.outcome"] == "cancelled"
    cut = next(s for s in spans if s.name == "fit_check.phase skeptical_comparison")
    assert cut.status.status_code is StatusCode.ERROR


async def test_sessions_past_the_limit_get_429_and_running_ones_finish(
    live_client: LiveClientFactory,
) -> None:
    providers, _, _ = counting_providers(llm_delay_s=0.2)
    async with live_client(providers=providers, max_concurrent_sessions=1) as (h, client, _):
        async with client.stream("POST", STREAM, json=QUERY) as first:
            await wait_until(lambda: h.service.sessions.active == 1)
            rejected = await client.post(STREAM, json=QUERY)
            assert rejected.status_code == 429
            assert rejected.headers["retry-after"].isdigit()
            assert rejected.json()["code"] == "RATE_LIMITED"
            assert h.telemetry.value("fit_check.rejected_requests", reason="rate_limited") == 1
            text = "".join([chunk async for chunk in first.aiter_text()])
        assert terminal(text)[0] == "complete"
        await wait_until(lambda: h.service.sessions.active == 0)
        assert (await client.post(STREAM, json=QUERY)).status_code == 200


class LeakySearch(CountingSearch):
    """A provider bug whose exception text carries what no client should see."""

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        raise KeyError("internal detail: https://internal.example/?token=abc123")


async def test_an_unexpected_provider_exception_reaches_the_client_as_its_kind_only(
    harness_factory: HarnessFactory,
) -> None:
    providers, _, _ = counting_providers()
    providers.search = LeakySearch()
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        response = await client.post(STREAM, json=QUERY)
    name, data = terminal(response.text)
    assert (name, data["code"]) == ("error", "SEARCH_ERROR")
    assert "KeyError" in data["message"]
    assert "internal" not in data["message"] and "abc123" not in data["message"]
