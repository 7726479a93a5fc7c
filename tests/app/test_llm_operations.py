"""What an LLM operator asks: the cost of a call, a phase, a request and a session; time to
first chunk; the session as the GenAI conversation; and the spend guard. Against the
OpenAI-compatible fake (which reports usage) on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.trace import SpanKind

from app.providers.prices import Price, PriceTable
from tests.fake_apis import FakeAPI, provider_settings
from tests.helpers import (
    Events,
    Harness,
    HarnessFactory,
    LiveServerFactory,
    attrs,
    in_process_client,
    llm_spans,
    parse_sse,
)

QUERY = {"query": "Senior Python engineer at Acme, Kafka", "session_id": "costs-1"}
#: gpt-4o-mini in the shipped table: $0.15 in, $0.075 cached in, $0.60 out per million.
MINI = Price(input=0.15, cached_input=0.075, output=0.60)


async def stream(
    h: Harness, body: dict[str, Any] | None = None
) -> tuple[int, Events, dict[str, str]]:
    async with in_process_client(h.app) as client:
        response = await client.post("/api/fit-check/stream", json=body or QUERY)
    events = parse_sse(response.text) if response.status_code == 200 else []
    return response.status_code, events, dict(response.headers)


async def test_a_priced_model_costs_its_tokens_on_every_span_the_counter_and_the_event(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI(cached_tokens=23)
    async with live_server(fake.app()) as api:
        h = harness_factory(**provider_settings(api.url), llm_model="gpt-4o-mini")
        status, events, _ = await stream(h)
    assert status == 200 and events[-1][0] == "complete"
    calls = llm_spans(h)
    assert len(calls) == 3
    costs = []
    for span in calls:
        a = attrs(span)
        expected = MINI.cost(123, 23, a["gen_ai.usage.output_tokens"])
        assert a["fit_check.cost_usd"] == pytest.approx(expected)
        costs.append(expected)
        assert a["gen_ai.conversation.id"] == QUERY["session_id"]
        assert a["gen_ai.response.time_to_first_chunk"] >= 0
    total = sum(costs)
    (request,) = [s for s in h.telemetry.finished_spans() if s.kind == SpanKind.SERVER]
    assert attrs(request)["fit_check.cost_usd"] == pytest.approx(total)
    phases = [s for s in h.telemetry.finished_spans() if s.name.startswith("fit_check.phase")]
    assert sum(attrs(p).get("fit_check.cost_usd", 0) for p in phases) == pytest.approx(total)
    assert events[-1][1]["cost_usd"] == pytest.approx(total, abs=1e-6)
    assert events[-1][1]["unpriced_calls"] == 0
    assert h.telemetry.value("fit_check.llm.cost_usd", model="gpt-4o-mini") == pytest.approx(total)
    first_chunk = [
        p.count
        for metric, p in h.telemetry.metric_points()
        if metric.name == "gen_ai.client.operation.time_to_first_chunk"
        and isinstance(p, HistogramDataPoint)
    ]
    assert sum(first_chunk) == 3


async def test_an_unknown_model_is_counted_unpriced_never_free(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI(model="my-local-llama")
    async with live_server(fake.app()) as api:
        h = harness_factory(**provider_settings(api.url), llm_model="my-local-llama")
        _, events, _ = await stream(h)
    assert events[-1][1]["unpriced_calls"] == 3
    assert events[-1][1]["cost_usd"] == 0
    for span in llm_spans(h):
        assert "fit_check.cost_usd" not in attrs(span)
        assert attrs(span)["fit_check.llm.unpriced_calls"] == 1
    assert h.telemetry.value("fit_check.llm.unpriced_calls", model="my-local-llama") == 3
    assert h.telemetry.value("fit_check.llm.cost_usd", model="my-local-llama") == 0


async def test_the_offline_analyzer_costs_nothing(harness: Harness) -> None:
    _, events, _ = await stream(harness)
    assert events[-1][1]["cost_usd"] == 0 and events[-1][1]["unpriced_calls"] == 0
    assert all(attrs(s)["fit_check.cost_usd"] == 0 for s in llm_spans(harness))


async def test_past_the_hourly_budget_new_streams_are_refused_and_counted(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI()
    async with live_server(fake.app()) as api:
        h = harness_factory(
            **provider_settings(api.url), llm_model="gpt-4o", budget_usd_per_hour=0.0001
        )
        status, events, _ = await stream(h)
        assert status == 200 and events[-1][0] == "complete"  # in flight: finishes
        status, _, headers = await stream(h, {"query": "Go, Postgres"})
        calls_before = len(fake.requests)
        status_again, _, _ = await stream(h, {"query": "Go, Postgres"})
    assert status == status_again == 429
    assert 1 <= int(headers["retry-after"]) <= 3600
    assert len(fake.requests) == calls_before  # refused before any provider call
    assert h.telemetry.value("fit_check.rejected_requests", reason="budget_exceeded") == 2


async def test_the_budget_refusal_is_the_one_error_shape(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI()
    async with live_server(fake.app()) as api:
        h = harness_factory(
            **provider_settings(api.url), llm_model="gpt-4o", budget_usd_per_hour=0.0001
        )
        await stream(h)
        async with in_process_client(h.app) as client:
            response = await client.post("/api/fit-check/stream", json={"query": "Go"})
    body = response.json()
    assert body["code"] == "BUDGET_EXCEEDED"
    assert "budget" in body["message"]


def test_a_snapshot_name_takes_its_family_price_and_cached_tokens_are_cheaper() -> None:
    table = PriceTable.load()
    assert table.price("gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini")
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o")
    assert table.price("llama3") is None
    assert MINI.cost(1_000_000, 0, 0) == pytest.approx(0.15)
    assert MINI.cost(1_000_000, 1_000_000, 0) == pytest.approx(0.075)
    assert MINI.cost(0, 0, 1_000_000) == pytest.approx(0.60)
    assert table.as_of


def test_a_price_file_replaces_the_table_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "prices.json"
    good.write_text(json.dumps({"as_of": "2026-12-01", "models": {"m": {"input": 1, "output": 2}}}))
    table = PriceTable.load(good)
    assert table.price("m") == Price(input=1, cached_input=1, output=2)
    assert table.price("gpt-4o") is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"models": {"m": {"input": -1, "output": 2}}}))
    with pytest.raises(ValueError, match="negative"):
        PriceTable.load(bad)
    with pytest.raises(ValueError, match="not a price table"):
        PriceTable.load(tmp_path / "missing.json")
