"""The in-memory trace store: grouped by trace, bounded by count and bytes, no user text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode, Tracer

from otel.facade import KeptSpan
from otel.recent_traces import RecentTraceStore, estimated_bytes
from otel.redact import UrlRedactingSpanProcessor
from otel.testing import captured_telemetry
from otel.wiring import TelemetryConfig, setup_telemetry

SECRET = "Acme Payments, Senior Staff"


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    yield tracer_provider
    tracer_provider.shutdown()


def tracer_with(provider: TracerProvider, store: RecentTraceStore) -> Tracer:
    provider.add_span_processor(store)
    return provider.get_tracer("test")


def one_trace(tracer: Tracer, name: str = "request", children: int = 1) -> str:
    """A root span with ``children`` children; the trace's id in hex."""
    with tracer.start_as_current_span(name) as root:
        for n in range(children):
            with tracer.start_as_current_span(f"{name} child {n}"):
                pass
    return format(root.get_span_context().trace_id, "032x")


def kept_names(store: RecentTraceStore, trace_id: str) -> list[str]:
    kept = store.get(trace_id)
    return [] if kept is None else [span.name for span in kept.spans]


def test_spans_are_kept_by_trace_with_their_parents(provider: TracerProvider) -> None:
    store = RecentTraceStore()
    tracer = tracer_with(provider, store)
    first, second = one_trace(tracer, "a"), one_trace(tracer, "b")
    kept = store.get(first)
    assert kept is not None and kept.dropped == 0
    child, root = kept.spans  # in the order they ended
    assert (root.name, child.name) == ("a", "a child 0")
    assert root.parent_id == "" and child.parent_id == root.span_id
    assert {root.trace_id, child.trace_id} == {first}
    assert len(root.span_id) == 16 and root.start_ns <= child.start_ns <= child.end_ns
    assert root.error is None
    assert kept_names(store, second) == ["b child 0", "b"]
    assert store.get("0" * 32) is None


def test_past_the_count_bound_the_oldest_trace_goes_first(provider: TracerProvider) -> None:
    store = RecentTraceStore(max_traces=3)
    tracer = tracer_with(provider, store)
    ids = [one_trace(tracer, f"t{n}") for n in range(5)]
    assert store.trace_ids() == tuple(ids[2:])
    assert store.get(ids[0]) is None and store.get(ids[1]) is None
    assert kept_names(store, ids[4]) == ["t4 child 0", "t4"]


def test_a_trace_that_still_gets_spans_is_not_the_oldest(provider: TracerProvider) -> None:
    """A long session's root span ends last: its trace stays while it is active."""
    store = RecentTraceStore(max_traces=3)
    tracer = tracer_with(provider, store)
    long_root = tracer.start_span("long")
    tracer.start_span("long child", context=trace.set_span_in_context(long_root)).end()
    others = [one_trace(tracer, f"t{n}") for n in range(2)]
    long_root.end()
    long_id = format(long_root.get_span_context().trace_id, "032x")
    assert store.trace_ids() == (*others, long_id)
    newest = one_trace(tracer, "t2")
    assert store.trace_ids() == (others[1], long_id, newest)
    assert kept_names(store, long_id) == ["long child", "long"]


def test_past_the_byte_bound_the_oldest_traces_go_first(provider: TracerProvider) -> None:
    probe = RecentTraceStore()
    trace_id = one_trace(tracer_with(provider, probe), children=4)
    kept = probe.get(trace_id)
    assert kept is not None
    one_trace_bytes = sum(estimated_bytes(span) for span in kept.spans)
    assert probe.bytes == one_trace_bytes

    store = RecentTraceStore(max_traces=1000, max_bytes=int(one_trace_bytes * 3.5))
    other = TracerProvider(shutdown_on_exit=False)
    tracer = tracer_with(other, store)
    ids = []
    for _ in range(10):
        ids.append(one_trace(tracer, children=4))
        assert store.bytes <= store.max_bytes
    other.shutdown()
    # Three whole traces fit; the fourth's spans pushed the oldest out, one by one.
    assert store.trace_ids() == tuple(ids[-3:])
    assert store.bytes == 3 * one_trace_bytes


def test_a_trace_alone_over_the_byte_bound_keeps_what_fits(provider: TracerProvider) -> None:
    store = RecentTraceStore(max_bytes=4096)
    tracer = tracer_with(provider, store)
    before = one_trace(tracer, "before")
    big = one_trace(tracer, "big", children=20)
    kept = store.get(big)
    assert kept is not None
    assert 0 < len(kept.spans) < 21 and len(kept.spans) + kept.dropped == 21
    assert store.bytes <= 4096
    assert store.get(before) is None  # made room before the big one ran out of it


def test_the_estimate_counts_each_attribute() -> None:
    span = KeptSpan("0" * 32, "0" * 16, "", "s", 0, 1, None, {})
    bigger = KeptSpan("0" * 32, "0" * 16, "", "s", 0, 1, None, {"k": "v" * 1000})
    listed = KeptSpan("0" * 32, "0" * 16, "", "s", 0, 1, None, {"k": ("v" * 500, "v" * 500)})
    assert estimated_bytes(bigger) - estimated_bytes(span) > 1000
    assert estimated_bytes(listed) > estimated_bytes(bigger)


def test_no_prompt_url_query_or_exception_text_is_kept(provider: TracerProvider) -> None:
    store = RecentTraceStore()
    provider.add_span_processor(UrlRedactingSpanProcessor())
    tracer = tracer_with(provider, store)
    with tracer.start_as_current_span("chat model") as span:
        span.set_attribute("gen_ai.input.messages", f'[{{"content": "{SECRET}"}}]')
        span.set_attribute("gen_ai.output.messages", f'[{{"content": "{SECRET}"}}]')
        span.set_attribute("gen_ai.system_instructions", SECRET)
        span.set_attribute("gen_ai.request.model", "model-1")
        # Set after start, as the server span's are: the store redacts again.
        span.set_attribute("url.full", f"https://search.example/v1?q={SECRET}&key=k")
        span.set_attribute("url.query", f"query={SECRET}")
        span.set_attribute("error.type", "ValueError")
        span.set_status(StatusCode.ERROR, f"ValueError: {SECRET}")
    trace = store.get(format(span.get_span_context().trace_id, "032x"))
    assert trace is not None
    (kept,) = trace.spans
    assert SECRET not in repr(kept)
    assert kept.attributes == {
        "gen_ai.request.model": "model-1",
        "url.full": "https://search.example/v1?q=REDACTED&key=REDACTED",
        "url.query": "query=REDACTED",
        "error.type": "ValueError",
    }
    assert kept.error == "ValueError"


async def test_with_content_capture_on_the_store_still_keeps_no_content() -> None:
    """The exporter gets the prompts (the operator asked for them); the store does not."""
    captured = captured_telemetry(TelemetryConfig(capture_content=True))
    telemetry = captured.runtime.telemetry
    store = telemetry.recent_traces
    assert store is not None

    prompt = Message(role="user", content=SECRET)
    with telemetry.llm_call(provider="p", model="m", input_messages=[prompt]) as scope:
        scope.output_parts.append(SECRET)
    (exported,) = captured.finished_spans()
    assert SECRET in str(exported.attributes)
    assert exported.context is not None
    kept = store.get(format(exported.context.trace_id, "032x"))
    assert kept is not None
    assert SECRET not in repr(kept)
    assert "gen_ai.request.model" in kept.spans[0].attributes
    captured.runtime.shutdown()


@pytest.mark.parametrize(
    ("config", "kept"),
    [
        (TelemetryConfig(), True),
        (TelemetryConfig(traces_exporters=("console",)), True),
        (TelemetryConfig(traces_exporters=("none",)), True),
        (TelemetryConfig(recent_traces=0), False),
        (TelemetryConfig(traces_exporters=("otlp",)), False),
        (TelemetryConfig(otlp_endpoint="http://127.0.0.1:9", metrics_exporters=("none",)), False),
        (TelemetryConfig(otlp_traces_endpoint="http://127.0.0.1:9/v1/traces"), False),
        (TelemetryConfig(sdk_disabled=True), False),
    ],
    ids=["default", "console", "none", "zero", "otlp", "endpoint", "traces-endpoint", "off"],
)
def test_traces_are_kept_only_with_no_back_end(config: TelemetryConfig, kept: bool) -> None:
    runtime = setup_telemetry(config)
    try:
        store = runtime.telemetry.recent_traces
        assert (store is not None) == kept
        assert ("memory (/trace/{id}" in runtime.exports["traces"]) == kept
    finally:
        runtime.shutdown()


def test_the_bounds_come_from_the_config() -> None:
    runtime = setup_telemetry(TelemetryConfig(recent_traces=7, recent_traces_bytes=65_536))
    store = runtime.telemetry.recent_traces
    assert store is not None and (store.max_traces, store.max_bytes) == (7, 65_536)
    assert runtime.exports["traces"] == (
        "memory (/trace/{id}: the last 7 traces, at most 0.0625 MiB)"
    )
    runtime.shutdown()
