"""The OpenAI-compatible and Google CSE providers against real loopback servers."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from app.providers.openai_chat import provider_name, short_model_name
from tests.fake_apis import FakeAPI, provider_settings
from tests.helpers import (
    Events,
    Harness,
    HarnessFactory,
    LiveServerFactory,
    attrs,
    in_process_client,
    make_settings,
    parse_sse,
)

SECRET = "sk-test-DO-NOT-LEAK-4242"
GOOGLE_SECRET = "AIza-DO-NOT-LEAK-9999"
QUERY = {"query": "Senior Python engineer at Acme, Kafka", "session_id": "real-providers"}


async def run_stream(
    harness_factory: HarnessFactory,
    live_server: LiveServerFactory,
    fake: FakeAPI,
    **settings: Any,
) -> tuple[Harness, Events]:
    async with live_server(fake.app()) as api:
        h = harness_factory(
            **provider_settings(api.url, openai_key=SECRET, google_key=GOOGLE_SECRET),
            llm_model="gpt-test",
            **settings,
        )
        async with in_process_client(h.app) as client:
            response = await client.post("/api/fit-check/stream", json=QUERY)
    return h, parse_sse(response.text)


def fake_netloc(fake: FakeAPI) -> str:
    return str(fake.requests[0]["headers"]["host"])


@pytest.mark.parametrize(
    ("base_url", "configured", "name"),
    [
        ("https://api.openai.com/v1", None, "openai"),
        ("https://generativelanguage.googleapis.com/v1beta/openai", None, "gcp.gemini"),
        ("http://localhost:11434/v1", None, "localhost:11434"),
        ("http://localhost:11434/v1", "ollama", "ollama"),
    ],
)
def test_the_provider_is_named_for_what_serves_it(
    base_url: str, configured: str | None, name: str
) -> None:
    assert provider_name(base_url, configured) == name


def test_a_model_reported_as_a_file_path_gets_its_short_name() -> None:
    assert short_model_name("/models/SmolLM2-135M-Instruct.Q4_1.gguf") == (
        "SmolLM2-135M-Instruct.Q4_1"
    )
    assert short_model_name("gpt-4o-mini-2024-07-18") == "gpt-4o-mini-2024-07-18"


async def test_stream_runs_on_openai_and_google_protocols(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI()
    h, events = await run_stream(harness_factory, live_server, fake)
    assert events[-1][0] == "complete", events[-1]
    report = "".join(d["chunk"] for n, d in events if n == "response")
    assert report == fake.reply

    chats = [r for r in fake.requests if r["path"] == "/v1/chat/completions"]
    searches = [r for r in fake.requests if r["path"] == "/customsearch/v1"]
    assert len(chats) == 3 and len(searches) == 3
    assert chats[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert chats[0]["body"]["model"] == "gpt-test"
    assert chats[0]["body"]["messages"][0]["role"] == "system"
    assert searches[0]["headers"]["x-goog-api-key"] == GOOGLE_SECRET
    assert "key" not in searches[0]["query"]
    assert searches[0]["query"]["cx"] == "cse-1"

    # Outbound calls carry the request's trace; usage comes from the server's last chunk.
    trace_id = events[0][1]["trace_id"]
    assert all(r["headers"]["traceparent"].split("-")[1] == trace_id for r in fake.requests)
    spans = h.telemetry.finished_spans()
    llm = [s for s in spans if s.name == "chat gpt-test"]
    # A server nobody named: its host and port (a local llama.cpp, Ollama, vLLM).
    assert attrs(llm[0])["gen_ai.provider.name"] == fake_netloc(fake)
    assert attrs(llm[0])["gen_ai.response.model"] == "fake-gpt-2026-01-01"
    assert attrs(llm[0])["gen_ai.usage.input_tokens"] == 123
    http_spans = [s for s in spans if s.kind is SpanKind.CLIENT and s.name in ("POST", "GET")]
    assert len(http_spans) == 6
    assert all(attrs(s)["session_id"] == "real-providers" for s in http_spans)


async def test_outbound_http_spans_go_with_the_standard_variable_and_the_rest_stays(
    harness_factory: HarnessFactory,
    live_server: LiveServerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests, HTTPX")
    fake = FakeAPI()
    h, events = await run_stream(harness_factory, live_server, fake)
    assert events[-1][0] == "complete", events[-1]
    spans = h.telemetry.finished_spans()
    clients = sorted(s.name for s in spans if s.kind is SpanKind.CLIENT)
    assert clients == ["chat gpt-test"] * 3 + ["search google"]
    assert all(s.kind is not SpanKind.CLIENT or attrs(s)["session_id"] for s in spans)
    assert fake.requests and not any("traceparent" in r["headers"] for r in fake.requests)


def test_the_server_span_cannot_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "httpx,fastapi")
    with pytest.raises(ValidationError, match="fastapi cannot be disabled"):
        make_settings()


@pytest.mark.parametrize("status", [200, 500])
async def test_keys_never_reach_logs_spans_metrics_or_clients(
    harness_factory: HarnessFactory,
    live_server: LiveServerFactory,
    json_log: io.StringIO,
    status: int,
) -> None:
    logging.getLogger().setLevel(logging.DEBUG)  # json_log restores the level
    h, events = await run_stream(harness_factory, live_server, FakeAPI(status=status))
    buffer = json_log
    emitted = buffer.getvalue() + repr(events)
    emitted += repr(
        [
            (s.name, dict(attrs(s)), [e.attributes for e in s.events])
            for s in h.telemetry.finished_spans()
        ]
    )
    emitted += repr(list(h.telemetry.metric_points()))
    async with in_process_client(h.app) as client:
        emitted += (await client.get("/metrics")).text
        emitted += (await client.get("/api/fit-check/health")).text
    assert "session_id" in buffer.getvalue()  # the capture did see the request's lines
    assert SECRET not in emitted and GOOGLE_SECRET not in emitted
    assert "Bearer" not in emitted


async def test_http_errors_become_provider_errors(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    _, events = await run_stream(harness_factory, live_server, FakeAPI(status=503))
    assert events[-1][0] == "error"
    assert events[-1][1]["code"] == "SEARCH_ERROR"
    assert "503" in events[-1][1]["message"]
    assert GOOGLE_SECRET not in events[-1][1]["message"]


async def test_llm_http_error_is_llm_error(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI()
    async with live_server(fake.app()) as api:
        h = harness_factory(
            llm_provider="openai", openai_base_url=f"{api.url}/v1", openai_api_key=SECRET
        )
        fake.status = 429
        async with in_process_client(h.app) as client:
            events = parse_sse((await client.post("/api/fit-check/stream", json=QUERY)).text)
    assert events[-1][1]["code"] == "LLM_ERROR"
    assert h.telemetry.value("fit_check.llm.calls", model="gpt-4o-mini", status="error") == 1


async def test_a_lone_surrogate_from_the_llm_does_not_break_the_stream(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    # JSON may escape half of a surrogate pair ("\ud83d"); it decodes to a str that is not
    # valid Unicode, which neither UTF-8 nor orjson will encode as it is.
    fake = FakeAPI(reply="Strong fit \ud83d for the role")
    _h, events = await run_stream(harness_factory, live_server, fake)
    assert events[-1][0] == "complete", events[-1]
    report = "".join(d["chunk"] for n, d in events if n == "response")
    assert report == fake.reply


async def test_a_server_that_ignores_stream_true_is_read_whole(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI(streams=False)
    h, events = await run_stream(harness_factory, live_server, fake)
    assert events[-1][0] == "complete", events[-1]
    assert "".join(d["chunk"] for n, d in events if n == "response") == fake.reply
    llm = [s for s in h.telemetry.finished_spans() if s.name == "chat gpt-test"]
    assert attrs(llm[0])["gen_ai.usage.input_tokens"] == 123


@pytest.mark.parametrize("streams", [True, False])
async def test_an_empty_answer_is_an_llm_error_never_an_empty_success(
    harness_factory: HarnessFactory, live_server: LiveServerFactory, streams: bool
) -> None:
    h, events = await run_stream(harness_factory, live_server, FakeAPI(reply="", streams=streams))
    assert events[-1][0] == "error" and events[-1][1]["code"] == "LLM_ERROR", events[-1]
    assert not [n for n, _ in events if n == "response"]
    assert h.telemetry.value("fit_check.llm.calls", model="gpt-test", status="error") == 1
    assert h.telemetry.value("fit_check.llm.calls", model="gpt-test", status="success") == 0


async def test_httpcore_finds_sniffio_so_no_call_pays_for_a_failed_import() -> None:
    """httpcore imports sniffio on every connection and lock set-up; when it is missing
    each of those walks sys.path (encode/httpcore#1103): a quarter of a real-provider
    stream's CPU (docs/performance.md). It is a declared dependency for that reason."""
    import sys

    import httpcore._synchronization

    assert httpcore._synchronization.current_async_library() == "asyncio"
    assert "sniffio" in sys.modules


async def test_a_slow_but_steady_model_is_not_cut_by_the_gap_limit(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """Forty words 50 ms apart, 2 s an answer: longer than the provider timeout, which
    once bounded the whole streamed answer, and never a gap over the idle limit."""
    fake = FakeAPI(reply=" ".join(f"w{n}" for n in range(40)), chunk_gap_s=0.05)
    _, events = await run_stream(
        harness_factory,
        live_server,
        fake,
        provider_timeout_s=1,
        llm_idle_timeout_s=0.5,
        llm_first_chunk_timeout_s=1,
    )
    assert events[-1][0] == "complete", events[-1]


async def test_a_model_that_stalls_mid_answer_ends_by_the_gap_limit_and_says_so(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    fake = FakeAPI(stall_after=3)
    h, events = await run_stream(harness_factory, live_server, fake, llm_idle_timeout_s=0.3)
    assert events[-1] == (
        "error",
        {"code": "LLM_ERROR", "message": "llm call timed out: no chunk for 0.3s"},
    )
    assert h.telemetry.value("fit_check.llm.calls", model="gpt-test", status="error") == 1


def common_prefix(texts: list[str]) -> str:
    shortest = min(texts, key=len)
    for n, char in enumerate(shortest):
        if any(text[n] != char for text in texts):
            return shortest[:n]
    return shortest


async def test_a_sessions_calls_share_their_prompt_up_to_the_task(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """Laid out for prefix caching: the system prompt and the facts first, the task last,
    so each call re-reads only what is new (a local model spends most of a call there)."""
    fake = FakeAPI()
    await run_stream(harness_factory, live_server, fake)
    prompts = [
        "\n".join(m["content"] for m in r["body"]["messages"])
        for r in fake.requests
        if r["path"] == "/v1/chat/completions"
    ]
    first, second, third = prompts
    shared = common_prefix(prompts)
    assert '"matches": [' in shared  # all the facts the first call had, but its end
    assert len(shared) > 0.8 * len(first)
    assert len(common_prefix([second, third])) > len(second) - 100  # all but the task
    for prompt in prompts:
        assert prompt.rsplit("\n", 1)[-1].startswith("Task: ")


async def test_tokens_read_from_the_providers_prompt_cache_are_on_the_span(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    h, _ = await run_stream(harness_factory, live_server, FakeAPI(cached_tokens=96))
    chats = [s for s in h.telemetry.spans.get_finished_spans() if s.name.startswith("chat ")]
    assert [attrs(s)["gen_ai.usage.cache_read.input_tokens"] for s in chats] == [96] * 3
    h, _ = await run_stream(harness_factory, live_server, FakeAPI())
    chats = [s for s in h.telemetry.spans.get_finished_spans() if s.name.startswith("chat ")]
    assert not [s for s in chats if "gen_ai.usage.cache_read.input_tokens" in attrs(s)]


async def test_a_stream_without_usage_says_so_instead_of_counting_nothing(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    h, events = await run_stream(harness_factory, live_server, FakeAPI(reports_usage=False))
    assert events[-1][0] == "complete"
    chats = [s for s in h.telemetry.spans.get_finished_spans() if s.name.startswith("chat ")]
    assert [attrs(s).get("fit_check.llm.usage_reported") for s in chats] == [False] * 3
    assert not [s for s in chats if "gen_ai.usage.input_tokens" in attrs(s)]
    assert h.telemetry.value("fit_check.llm.usage_missing", model="gpt-test") == 3
    h, _ = await run_stream(harness_factory, live_server, FakeAPI())
    assert h.telemetry.value("fit_check.llm.usage_missing", model="gpt-test") == 0


async def test_a_long_call_in_a_silent_phase_shows_progress_once_a_second(
    harness_factory: HarnessFactory, live_server: LiveServerFactory
) -> None:
    """The comparison and matching phases send nothing until their answer is whole: a slow
    model's 2.5 s answer there now says, once a second, how much has come."""
    fake = FakeAPI(reply=" ".join(f"w{n}" for n in range(25)), chunk_gap_s=0.1)
    _, events = await run_stream(harness_factory, live_server, fake)
    progress = [data for name, data in events if name == "progress"]
    for phase in ("skeptical_comparison", "skills_matching"):
        mine = [p["characters"] for p in progress if p["phase"] == phase]
        assert 1 <= len(mine) <= 3, mine  # about one a second, not one a chunk
        assert mine == sorted(mine) and mine[0] > 0
    assert {p["phase"] for p in progress} == {"skeptical_comparison", "skills_matching"}
