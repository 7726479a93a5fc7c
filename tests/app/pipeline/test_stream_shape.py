"""``tests.stream_shape`` says what a real offline stream makes (the floor of ``bench.ir``
reproduces it)."""

from __future__ import annotations

import httpx
from opentelemetry.trace import SpanKind

from app.pipeline.events import PHASES
from tests.helpers import Harness, attrs, parent_id
from tests.stream_shape import LLM_PHASES, SEARCH_PHASES


async def test_an_offline_stream_calls_the_llm_and_search_in_these_phases(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/api/fit-check/stream", json={"query": "Senior Python engineer, FastAPI, Kafka"}
    )
    assert response.status_code == 200
    spans = harness.telemetry.finished_spans()
    phase_of = {
        s.context.span_id: attrs(s)["fit_check.phase"]
        for s in spans
        if s.name.startswith("fit_check.phase ")
    }
    calls = [s for s in spans if s.kind is SpanKind.CLIENT]
    llm = [phase_of[parent_id(s)] for s in calls if s.name.startswith("chat ")]
    search = [phase_of[parent_id(s)] for s in calls if s.name.startswith("search ")]

    assert tuple(llm) == LLM_PHASES
    assert tuple(search) == SEARCH_PHASES
    assert len(spans) == 1 + len(PHASES) + len(llm) + len(search)
