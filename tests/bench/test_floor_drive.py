"""The floor ``bench.ir`` compares against makes the units a real offline stream makes."""

from __future__ import annotations

import httpx
from opentelemetry.trace import SpanKind

from app.pipeline.events import PHASES
from bench import floor_drive
from tests.helpers import Harness, attrs, parent_id


async def test_the_floor_makes_a_streams_spans(harness: Harness, client: httpx.AsyncClient) -> None:
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

    assert floor_drive.PHASES == PHASES
    assert tuple(llm) == floor_drive.LLM_PHASES
    assert tuple(search) == floor_drive.SEARCH_PHASES
    assert len(spans) == 1 + len(PHASES) + len(llm) + len(search)
