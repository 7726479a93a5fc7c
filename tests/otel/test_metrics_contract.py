"""``/metrics`` against the spec's table: names, types, labels, values and buckets."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from app.pipeline.events import PHASES
from otel.wiring import TelemetryConfig
from tests.fakes import counting_providers
from tests.helpers import Harness, HarnessFactory, in_process_client

STREAM = "/api/fit-check/stream"
QUERY = {"query": "Senior Python engineer, FastAPI, Kubernetes", "session_id": "metrics-1"}

# (name, type, label names, {label: required values}, buckets)
ContractRow = tuple[str, str, set[str], dict[str, set[str]], list[float] | None]
CONTRACT: list[ContractRow] = [
    ("fit_check_active_sessions", "gauge", set(), {}, None),
    (
        "fit_check_requests",
        "counter",
        {"status"},
        {"status": {"success", "error", "timeout", "cancelled"}},
        None,
    ),
    (
        "fit_check_request_duration_seconds",
        "histogram",
        set(),
        {},
        [1, 5, 10, 30, 60, 120, 300, 600],
    ),
    (
        "fit_check_phase_completions",
        "counter",
        {"phase", "status"},
        {"phase": set(PHASES), "status": {"success", "error"}},
        None,
    ),
    (
        "fit_check_phase_duration_seconds",
        "histogram",
        {"phase"},
        {"phase": set(PHASES)},
        [0.1, 0.5, 1, 2, 5, 10, 30, 60],
    ),
    (
        "fit_check_llm_calls",
        "counter",
        {"model", "status"},
        {"model": {"offline-analyzer"}, "status": {"success", "error"}},
        None,
    ),
    (
        "fit_check_llm_latency_seconds",
        "histogram",
        {"model"},
        {"model": {"offline-analyzer"}},
        [0.5, 1, 2, 5, 10, 30],
    ),
    ("fit_check_circuit_breaker_state", "gauge", {"service"}, {"service": {"search", "llm"}}, None),
    ("fit_check_build_info", "gauge", {"version", "python_version"}, {}, None),
    # Beyond the spec (README, "Metrics"): the same discipline.
    (
        "fit_check_time_to_first_event_seconds",
        "histogram",
        set(),
        {},
        [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    ),
    (
        "fit_check_search_calls",
        "counter",
        {"provider", "status"},
        {"provider": {"offline"}, "status": {"success", "error"}},
        None,
    ),
    (
        "fit_check_search_latency_seconds",
        "histogram",
        {"provider"},
        {"provider": {"offline"}},
        [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
    ),
    (
        "fit_check_rejected_requests",
        "counter",
        {"reason"},
        {
            "reason": {
                "origin_not_allowed",
                "invalid_request",
                "payload_too_large",
                "rate_limited",
                "shutting_down",
                "header_too_large",
                "header_timeout",
            }
        },
        None,
    ),
    (
        "gen_ai_client_operation_duration_seconds",
        "histogram",
        {
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
        },
        {"gen_ai_request_model": {"offline-analyzer"}},
        [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92],
    ),
    (
        "gen_ai_client_token_usage",
        "histogram",
        {
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "gen_ai_token_type",
        },
        {"gen_ai_token_type": {"input", "output"}},
        [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864],
    ),
]


async def scrape(client: httpx.AsyncClient, accept: str | None = None) -> httpx.Response:
    headers = {"accept": accept} if accept else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return response


def label_sets(family: Metric, suffix: str = "") -> list[dict[str, str]]:
    return [dict(s.labels) for s in family.samples if s.name == family.name + suffix]


async def test_every_spec_metric_has_its_name_type_labels_and_buckets(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    await client.post(STREAM, json=QUERY)
    text = (await scrape(client)).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind, labels, values, buckets in CONTRACT:
        assert name in families, f"{name} missing"
        family = families[name]
        assert family.type == kind, name
        suffix = {"counter": "_total", "histogram": "_count"}.get(kind, "")
        series = label_sets(family, suffix)
        assert series, f"{name} has no samples"
        for labelset in series:
            assert set(labelset) == labels, (name, labelset)
        for label, required in values.items():
            assert required <= {s[label] for s in series}, (name, label)
        if buckets is not None:
            les = {float(s.labels["le"]) for s in family.samples if s.name == name + "_bucket"}
            assert les == {*map(float, buckets), float("inf")}, name
    assert "session_id" not in text
    assert "metrics-1" not in text


async def test_values_follow_the_traffic(harness: Harness, client: httpx.AsyncClient) -> None:
    await client.post(STREAM, json=QUERY)
    families = {f.name: f for f in text_string_to_metric_families((await scrape(client)).text)}

    def sample(name: str, suffix: str, **labels: str) -> float:
        return next(
            s.value
            for s in families[name].samples
            if s.name == name + suffix and s.labels == labels
        )

    assert sample("fit_check_requests", "_total", status="success") == 1
    assert sample("fit_check_requests", "_total", status="error") == 0
    assert sample("fit_check_request_duration_seconds", "_count") == 1
    for phase in PHASES:
        assert sample("fit_check_phase_completions", "_total", phase=phase, status="success") == 1
    assert sample("fit_check_llm_calls", "_total", model="offline-analyzer", status="success") == 3
    assert sample("fit_check_active_sessions", "") == 0
    build = next(iter(families["fit_check_build_info"].samples))
    # The harness's telemetry has TelemetryConfig's version (the service passes its own).
    assert build.value == 1 and build.labels["version"] == TelemetryConfig().service_version
    # Every duration is a real one: positive, and shorter than this offline stream's run.
    for name, family in families.items():
        if name.endswith("_seconds"):
            total = sum(s.value for s in family.samples if s.name == name + "_sum")
            assert 0 < total < 10, (name, total)


async def test_zero_filled_before_any_request(client: httpx.AsyncClient) -> None:
    families = {f.name: f for f in text_string_to_metric_families((await scrape(client)).text)}
    statuses = {s.labels["status"] for s in families["fit_check_requests"].samples}
    assert statuses == {"success", "error", "timeout", "cancelled"}
    phases = {
        (s.labels["phase"], s.labels["status"])
        for s in families["fit_check_phase_completions"].samples
    }
    assert phases == {(p, st) for p in PHASES for st in ("success", "error")}


async def test_extra_operator_metrics_are_exposed(client: httpx.AsyncClient) -> None:
    await client.post(STREAM, json=QUERY)
    names = {f.name for f in text_string_to_metric_families((await scrape(client)).text)}
    assert {
        "fit_check_time_to_first_event_seconds",
        "fit_check_search_calls",
        "fit_check_search_latency_seconds",
        "gen_ai_client_token_usage",
        "gen_ai_client_operation_duration_seconds",
    } <= names


async def test_no_duplicate_help_or_type_blocks(client: httpx.AsyncClient) -> None:
    await client.post(STREAM, json=QUERY)
    lines = (await scrape(client)).text.splitlines()
    headers = Counter(line.split(" ")[2] for line in lines if line.startswith("# TYPE"))
    assert [name for name, count in headers.items() if count > 1] == []


async def test_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    response = await scrape(client, "application/openmetrics-text; version=1.0.0")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_session_ids_never_grow_the_series_count(harness_factory: HarnessFactory) -> None:
    h = harness_factory()
    async with in_process_client(h.app) as client:
        await client.post(STREAM, json={**QUERY, "session_id": "s-0"})
        before = len((await scrape(client)).text.splitlines())
        for i in range(1, 20):
            await client.post(STREAM, json={**QUERY, "session_id": f"s-{i}"})
        after = len((await scrape(client)).text.splitlines())
    assert before == after


async def test_failures_show_in_metrics(harness_factory: HarnessFactory) -> None:
    providers, _, _ = counting_providers(llm_fail=True)
    h = harness_factory(providers=providers)
    async with in_process_client(h.app) as client:
        await client.post(STREAM, json=QUERY)
    assert h.telemetry.value("fit_check.llm.calls", model="offline-analyzer", status="error") == 1
    assert (
        h.telemetry.value(
            "fit_check.phase.completions", phase="skeptical_comparison", status="error"
        )
        == 1
    )
    assert h.telemetry.value("fit_check.requests", status="error") == 1


@pytest.mark.e2e  # promtool comes with the stack tools
async def test_promtool_finds_nothing_wrong(client: httpx.AsyncClient) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    await client.post(STREAM, json=QUERY)
    text = (await scrape(client)).text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


async def test_exemplars_only_on_the_duration_histograms(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    """A duration's exemplar opens a request that was that slow; a counter's would only
    cost each measurement a reservoir offer."""
    await client.post(STREAM, json=QUERY)
    with_exemplars = {
        metric.name for metric, point in harness.telemetry.metric_points() if point.exemplars
    }
    assert with_exemplars == {
        "fit_check.request.duration",
        "fit_check.time_to_first_event",
        "fit_check.phase.duration",
        "fit_check.llm.latency",
        "fit_check.search.latency",
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
    }


#: Each family's HELP line: what an operator reads in Prometheus and Grafana.
HELP = {
    "fit_check_requests": "Fit check requests by outcome",
    "fit_check_request_duration_seconds": "Time from request start to the end of its stream",
    "fit_check_time_to_first_event_seconds": (
        "Time from request start until the client got its first phase event"
    ),
    "fit_check_phase_completions": "Pipeline phases finished, by outcome",
    "fit_check_phase_duration_seconds": "Time spent in each pipeline phase",
    "fit_check_rejected_requests": "Requests refused before any work started, by reason",
    "fit_check_llm_calls": "LLM calls by model and outcome",
    "fit_check_llm_latency_seconds": "LLM call latency, whole stream",
    "fit_check_search_calls": "Search provider calls by provider and outcome",
    "fit_check_search_latency_seconds": "Search provider call latency",
    "gen_ai_client_operation_duration_seconds": "GenAI operation duration",
    "gen_ai_client_token_usage": "Tokens used per GenAI operation",
    "fit_check_build_info": "Build information (value is always 1)",
    "fit_check_active_sessions": "Fit check sessions streaming right now",
    "fit_check_circuit_breaker_state": "Circuit breaker state (0=closed, 1=open, 2=half_open)",
}


async def test_every_family_says_what_it_counts(client: httpx.AsyncClient) -> None:
    await client.post(STREAM, json=QUERY)  # histograms appear with their first value
    families = {f.name: f for f in text_string_to_metric_families((await scrape(client)).text)}
    assert {name: families[name].documentation for name in HELP} == HELP


async def test_every_instrument_has_its_unit(harness: Harness, client: httpx.AsyncClient) -> None:
    """OTLP carries the unit apart from the name: seconds for durations, UCUM's
    ``{token}`` for the token counts, none for counts."""
    await client.post(STREAM, json=QUERY)
    units = {metric.name: metric.unit for metric, _ in harness.telemetry.metric_points()}
    durations = {name for name in units if "duration" in name or "latency" in name}
    durations |= {
        "fit_check.time_to_first_event",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
    }
    assert {units[name] for name in durations} == {"s"}
    assert units["gen_ai.client.token.usage"] == "{token}"
    assert {units[name] for name in units.keys() - durations - {"gen_ai.client.token.usage"}} == {
        ""
    }
