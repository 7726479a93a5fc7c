"""Spans of one stream, read from the SDK's in-memory exporter."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from app.pipeline.events import PHASES
from tests.fakes import counting_providers
from tests.helpers import (
    Harness,
    HarnessFactory,
    attrs,
    in_process_client,
    parent_id,
    parse_sse,
    started_ns,
)

STREAM = "/api/fit-check/stream"
QUERY = {"query": "Senior Python engineer, FastAPI, Kubernetes", "session_id": "trace-me"}


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_one_stream_makes_request_phase_and_provider_spans(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    response = await client.post(STREAM, json=QUERY)
    events = parse_sse(response.text)
    spans = harness.telemetry.finished_spans()

    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 1, [s.name for s in spans]
    root = servers[0]
    trace_id = format(root.context.trace_id, "032x")
    assert events[0][1]["trace_id"] == trace_id
    assert events[-1][1]["trace_id"] == trace_id
    assert response.headers["traceresponse"].startswith(f"00-{trace_id}-")
    assert attrs(root)["session_id"] == "trace-me"
    assert attrs(root)["fit_check.outcome"] == "success"

    phases = [s for s in spans if s.name.startswith("fit_check.phase ")]
    assert [attrs(s)["fit_check.phase"] for s in phases] == list(PHASES)
    assert all(parent_id(s) == root.context.span_id for s in phases)

    phase_ids = {attrs(s)["fit_check.phase"]: s.context.span_id for s in phases}
    searches = by_name(spans, "search offline")
    assert len(searches) == 1
    assert parent_id(searches[0]) == phase_ids["deep_research"]
    assert attrs(searches[0])["fit_check.search.query_count"] == 3
    assert attrs(searches[0])["fit_check.search.result_count"] > 0

    llm_spans = by_name(spans, "chat offline-analyzer")
    assert [parent_id(s) for s in llm_spans] == [
        phase_ids["skeptical_comparison"],
        phase_ids["skills_matching"],
        phase_ids["generate_results"],
    ]
    for span in llm_spans:
        assert span.kind is SpanKind.CLIENT
        assert attrs(span)["gen_ai.operation.name"] == "chat"
        assert attrs(span)["gen_ai.provider.name"] == "offline"
        assert attrs(span)["gen_ai.request.model"] == "offline-analyzer"
        assert attrs(span)["gen_ai.response.model"] == "offline-analyzer"
        assert attrs(span)["gen_ai.usage.input_tokens"] > 0
        assert attrs(span)["gen_ai.usage.output_tokens"] > 0
        assert not any("prompt" in key or "content" in key for key in attrs(span))

    assert all(attrs(s).get("session_id") == "trace-me" for s in spans)
    # No per-event spans: one server span, five phases, one search, three LLM calls.
    assert len(spans) == 1 + 5 + 1 + 3


async def test_health_and_metrics_are_not_traced(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    await client.get("/health")
    await client.get("/api/fit-check/health")
    await client.get("/metrics")
    assert harness.telemetry.finished_spans() == ()


async def test_failed_phase_has_error_status_and_exception(harness_factory: HarnessFactory) -> None:
    providers, _, _ = counting_providers(search_fail=True)
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        await client.post(STREAM, json=QUERY)
    spans = h.telemetry.finished_spans()
    phase = by_name(spans, "fit_check.phase deep_research")[0]
    assert phase.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in phase.events)
    search = by_name(spans, "search offline")[0]
    assert search.status.status_code is StatusCode.ERROR
    root = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert attrs(root)["fit_check.outcome"] == "error"
    assert root.status.status_code is StatusCode.ERROR
    assert not by_name(spans, "fit_check.phase skeptical_comparison")


async def test_breaker_rejection_is_a_span_event(harness_factory: HarnessFactory) -> None:
    providers, _, _ = counting_providers(search_fail=True)
    h = harness_factory(providers=providers, breaker_failure_threshold=1)
    async with in_process_client(h.app) as client:
        await client.post(STREAM, json=QUERY)
        h.telemetry.spans.clear()
        await client.post(STREAM, json=QUERY)
    phase = by_name(h.telemetry.finished_spans(), "fit_check.phase deep_research")[0]
    rejected = [e for e in phase.events if e.name == "circuit_breaker.rejected"]
    assert len(rejected) == 1
    assert dict(attrs(rejected[0])) == {
        "fit_check.dependency": "search",
        "fit_check.retry_after_s": pytest.approx(30.0, abs=1),
    }
    assert not by_name(h.telemetry.finished_spans(), "search offline")


async def test_a_breaker_opening_is_a_span_event_and_a_warning(
    harness_factory: HarnessFactory, json_log: io.StringIO
) -> None:
    providers, _, _ = counting_providers(search_fail=True)
    h = harness_factory(providers=providers, breaker_failure_threshold=1)
    async with in_process_client(h.app) as client:
        await client.post(STREAM, json=QUERY)
        await client.post(STREAM, json=QUERY)  # refused by the open breaker
    phases = by_name(h.telemetry.finished_spans(), "fit_check.phase deep_research")
    changes = [e for e in phases[0].events if e.name == "circuit_breaker.state_change"]
    assert [dict(attrs(e)) for e in changes] == [
        {"fit_check.dependency": "search", "fit_check.from": "closed", "fit_check.to": "open"}
    ]
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    opened = [line for line in lines if line["message"] == "Circuit breaker state changed"]
    assert [(o["level"], o["dependency"], o["from_state"], o["to_state"]) for o in opened] == [
        ("WARNING", "search", "closed", "open")
    ]
    refused = [line for line in lines if line["message"] == "Circuit breaker open, call rejected"]
    assert [(r["level"], r["dependency"]) for r in refused] == [("WARNING", "search")]


async def test_timeout_marks_the_request_span(harness_factory: HarnessFactory) -> None:
    providers, _, _ = counting_providers(llm_delay_s=5)
    h = harness_factory(providers=providers, request_timeout_s=0.5)
    async with in_process_client(h.app) as client:
        await client.post(STREAM, json=QUERY)
    spans = h.telemetry.finished_spans()
    root = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert attrs(root)["fit_check.outcome"] == "timeout"
    assert (root.status.status_code, root.status.description) == (StatusCode.ERROR, "timeout")
    # The phase running when time ran out: the first LLM phase, unless a loaded machine
    # took the whole budget before it.
    phases = [s for s in spans if s.name.startswith("fit_check.phase ")]
    cut = max(phases, key=started_ns)
    assert cut.status.status_code is StatusCode.ERROR
    assert all(s.status.status_code is not StatusCode.ERROR for s in phases if s is not cut)


async def test_prompt_and_completion_are_recorded_only_when_asked() -> None:
    from app.asgi import build_app, telemetry_config
    from otel.testing import captured_telemetry
    from tests.helpers import make_settings

    for capture in (False, True):
        settings = make_settings(capture_content=capture)
        captured = captured_telemetry(telemetry_config(settings))
        app = build_app(settings, captured.runtime)
        async with in_process_client(app) as client:
            response = await client.post(STREAM, json=QUERY)
        report = "".join(d["chunk"] for n, d in parse_sse(response.text) if n == "response")
        llm = [s for s in captured.finished_spans() if s.name.startswith("chat ")]
        has_content = ["gen_ai.input.messages" in attrs(s) for s in llm]
        assert has_content == [capture] * 3
        if capture:
            prompt = json.loads(str(attrs(llm[0])["gen_ai.input.messages"]))
            assert [m["role"] for m in prompt] == ["system", "user"]
            assert all(m["parts"][0]["type"] == "text" for m in prompt)
            assert "Senior Python engineer" in prompt[1]["parts"][0]["content"]
            (answer,) = json.loads(str(attrs(llm[2])["gen_ai.output.messages"]))
            assert answer["role"] == "assistant" and answer["parts"][0]["type"] == "text"
            assert answer["parts"][0]["content"] == report  # the whole answer, as streamed


async def test_global_providers_get_no_second_copy_of_the_telemetry(
    harness_factory: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI's own telemetry stays off, even where global providers exist.

    ``opentelemetry-instrument`` or a host process may set them; FastAPI would then add a
    second server span and its own HTTP metrics to every request, next to ours.
    """
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    global_spans = InMemorySpanExporter()
    global_tracer_provider = TracerProvider()
    global_tracer_provider.add_span_processor(SimpleSpanProcessor(global_spans))
    global_metrics = InMemoryMetricReader()
    global_meter_provider = MeterProvider(metric_readers=[global_metrics])
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: global_tracer_provider)
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: global_meter_provider)

    h = harness_factory()
    async with in_process_client(h.app) as client:
        response = await client.post(STREAM, json=QUERY)
    assert "event: complete" in response.text
    assert [s for s in h.telemetry.finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.name for s in global_spans.get_finished_spans()] == []
    data = global_metrics.get_metrics_data()
    assert data is None or not data.resource_metrics


@pytest.mark.parametrize(
    ("slow", "call_span", "phase", "calls_metric", "labels"),
    [
        (
            "llm_delay_s",
            "chat offline-analyzer",
            "skeptical_comparison",
            "fit_check.llm.calls",
            {"model": "offline-analyzer"},
        ),
        (
            "search_delay_s",
            "search offline",
            "deep_research",
            "fit_check.search.calls",
            {"provider": "offline"},
        ),
    ],
)
async def test_one_cancellation_policy_for_phase_and_call_spans(
    harness_factory: HarnessFactory,
    slow: str,
    call_span: str,
    phase: str,
    calls_metric: str,
    labels: dict[str, str],
) -> None:
    """Cut short by someone else: ERROR status and error.type=cancelled on every span, no
    call or phase metric (not even the GenAI duration)."""
    providers, _, _ = counting_providers(
        llm_delay_s=5.0 if slow == "llm_delay_s" else 0.0,
        search_delay_s=5.0 if slow == "search_delay_s" else 0.0,
    )
    h = harness_factory(providers=providers, request_timeout_s=0.3)
    async with in_process_client(h.app) as client:
        await client.post(STREAM, json=QUERY)
    spans = h.telemetry.finished_spans()
    cut = by_name(spans, call_span) + by_name(spans, f"fit_check.phase {phase}")
    assert len(cut) == 2
    for span in cut:
        assert span.status.status_code is StatusCode.ERROR, span.name
        assert attrs(span)["error.type"] == "cancelled", span.name
    for status in ("success", "error"):
        assert h.telemetry.value(calls_metric, **labels, status=status) == 0
        assert h.telemetry.value("fit_check.phase.completions", phase=phase, status=status) == 0
    assert h.telemetry.value("fit_check.phase.duration", phase=phase) == 0
    genai_durations = sum(
        getattr(point, "count", 0)
        for metric, point in h.telemetry.metric_points()
        if metric.name == "gen_ai.client.operation.duration"
    )
    assert genai_durations == 0  # the cut call is the first LLM call in both cases
