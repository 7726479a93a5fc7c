"""The demo knobs: injected faults (seeded) and added latency, through the real factory."""

from __future__ import annotations

from typing import Any

from tests.helpers import Harness, HarnessFactory, in_process_client, parse_sse

STREAM = "/api/fit-check/stream"


async def outcomes(harness: Harness, n: int) -> list[str]:
    results = []
    async with in_process_client(harness.app) as client:
        for _ in range(n):
            events = parse_sse((await client.post(STREAM, json={"query": "Python"})).text)
            results.append(events[-1][1].get("code", "complete"))
    return results


async def test_fault_rate_one_fails_every_search(harness_factory: HarnessFactory) -> None:
    h = harness_factory(fault_rate_search=1.0, breaker_failure_threshold=100)
    assert await outcomes(h, 3) == ["SEARCH_ERROR"] * 3


async def test_fault_rate_one_fails_every_llm_call(harness_factory: HarnessFactory) -> None:
    h = harness_factory(fault_rate_llm=1.0, breaker_failure_threshold=100)
    assert await outcomes(h, 2) == ["LLM_ERROR"] * 2


async def test_seeded_faults_are_reproducible(harness_factory: HarnessFactory) -> None:
    settings: dict[str, Any] = {
        "fault_rate_llm": 0.1,
        "fault_rate_search": 0.1,
        "fault_seed": 7,
        "breaker_failure_threshold": 100,
    }
    first = await outcomes(harness_factory(**settings), 20)
    second = await outcomes(harness_factory(**settings), 20)
    assert first == second
    assert {"complete"} < set(first), first  # some fail, some pass


async def test_latency_is_added_to_provider_calls(harness_factory: HarnessFactory) -> None:
    h = harness_factory(latency_ms=150)
    async with in_process_client(h.app) as client:
        events = parse_sse((await client.post(STREAM, json={"query": "Python"})).text)
    durations = {d["phase"]: d["duration_ms"] for n, d in events if n == "phase_complete"}
    assert durations["deep_research"] >= 150
    assert durations["generate_results"] >= 150
    assert durations["connecting"] < 150
