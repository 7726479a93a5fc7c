"""The operator's four questions against the real stack: what a session cost (its spans in
Jaeger, the spend in Prometheus, the complete event), what users thought of it (the
verdict in the same trace in Jaeger and in VictoriaLogs), the spend guard refusing and
recovering, and the SLO burn-rate rules loaded by the real Prometheus. The LLM is the
OpenAI-compatible fake on loopback, which reports usage."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.replicas import FakeLLM
from tests.e2e.stack import Service, Stack, poll
from tests.helpers import parse_sse

pytestmark = pytest.mark.e2e

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM(model=MODEL)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def own_services(stack: Stack) -> Iterator[None]:
    """The services a test starts are stopped, and leave ``stack.services`` as they
    found it (other tests count on its two)."""
    before = list(stack.services)
    try:
        yield
    finally:
        mine = [s for s in stack.services if s not in before]
        stack.services[:] = mine
        stack.stop_services()
        stack.services[:] = before


def priced_service(stack: Stack, fake: FakeLLM, name: str, **env: str) -> Service:
    settings = {
        # Its own service name: the stack's exact sums count its own two services only.
        "OTEL_SERVICE_NAME": "fit-check-ops",
        "FIT_CHECK_LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-e2e",
        "FIT_CHECK_LLM_MODEL": MODEL,
        **env,
    }
    return stack.start_service(name, None, **settings)


def span_tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


@pytest.mark.usefixtures("own_services")
def test_cost_is_on_the_spans_in_prometheus_and_in_the_complete_event_and_a_verdict_joins_the_trace(
    stack: Stack, fake_llm: FakeLLM
) -> None:
    service = priced_service(stack, fake_llm, "fit-check-priced")
    session_id = f"ops-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{service.url}/api/fit-check/stream",
        json={"query": "Python, Kafka", "session_id": session_id},
        timeout=30,
    )
    events = parse_sse(response.text)
    complete = events[-1][1]
    trace_id = events[0][1]["trace_id"]
    assert events[-1][0] == "complete" and complete["cost_usd"] > 0
    key = next(line[4:] for line in response.text.splitlines() if line.startswith("id: "))
    verdict = httpx.post(
        f"{service.url}/api/fit-check/feedback",
        json={"stream_key": key.split(".")[0], "rating": "down"},
        timeout=10,
    )
    assert verdict.status_code == 202, verdict.text

    def whole_trace() -> list[dict[str, Any]] | None:
        spans = stack.trace(trace_id)
        names = {s["operationName"] for s in spans}
        return spans if "fit_check.feedback" in names and len(spans) >= 9 else None

    spans = poll(whole_trace, timeout_s=30, what="the trace with its verdict in Jaeger")
    calls = [span_tags(s) for s in spans if s["operationName"] == f"chat {MODEL}"]
    assert len(calls) == 3 and all(c["fit_check.cost_usd"] > 0 for c in calls)
    assert sum(c["fit_check.cost_usd"] for c in calls) == pytest.approx(
        complete["cost_usd"], abs=1e-6
    )
    assert all(c["gen_ai.conversation.id"] == session_id for c in calls)
    (feedback,) = [span_tags(s) for s in spans if s["operationName"] == "fit_check.feedback"]
    assert feedback["gen_ai.evaluation.score.label"] == "down"

    spent = poll(
        lambda: stack.scalar(f'sum(fit_check_llm_cost_usd_total{{model="{MODEL}"}})'),
        timeout_s=30,
        what="the spend in Prometheus",
    )
    assert spent >= complete["cost_usd"] * 0.999
    logged = poll(
        lambda: stack.logsql(f'trace_id:="{trace_id}" "Feedback received"') or None,
        timeout_s=30,
        what="the verdict's log line in VictoriaLogs",
    )
    assert logged[0]["session_id"] == session_id


@pytest.mark.usefixtures("own_services")
def test_the_spend_guard_refuses_then_lets_streams_in_when_the_budget_is_raised(
    stack: Stack, fake_llm: FakeLLM
) -> None:
    """A budget smaller than one analysis: the first stream finishes (in flight), the next
    is refused with 429 BUDGET_EXCEEDED and counted; a restart with a budget above the
    spend admits streams again (the hour's spend is per process without Redis)."""
    service = priced_service(
        stack, fake_llm, "fit-check-budget", FIT_CHECK_BUDGET_USD_PER_HOUR="0.00001"
    )
    first = httpx.post(
        f"{service.url}/api/fit-check/stream", json={"query": "Go, Postgres"}, timeout=30
    )
    assert parse_sse(first.text)[-1][0] == "complete"
    refused = httpx.post(
        f"{service.url}/api/fit-check/stream", json={"query": "Go, Postgres"}, timeout=30
    )
    assert refused.status_code == 429 and refused.json()["code"] == "BUDGET_EXCEEDED"
    assert int(refused.headers["retry-after"]) >= 1
    poll(
        lambda: (
            (stack.scalar('sum(fit_check_rejected_requests_total{reason="budget_exceeded"})') or 0)
            >= 1
        ),
        timeout_s=30,
        what="the refusal counted in Prometheus",
    )
    raised = priced_service(
        stack, fake_llm, "fit-check-budget-raised", FIT_CHECK_BUDGET_USD_PER_HOUR="100"
    )
    again = httpx.post(
        f"{raised.url}/api/fit-check/stream", json={"query": "Go, Postgres"}, timeout=30
    )
    assert parse_sse(again.text)[-1][0] == "complete"


def test_the_slo_and_spend_rules_are_loaded_by_prometheus(stack: Stack) -> None:
    def groups() -> dict[str, list[str]] | None:
        body = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()
        found = {g["name"]: [r["name"] for r in g["rules"]] for g in body["data"]["groups"]}
        return found or None

    loaded = poll(groups, timeout_s=30, what="Prometheus's rule groups")
    names = {name for rules in loaded.values() for name in rules}
    assert {"FitCheckLLMSpendHigh", "FitCheckLLMUnpricedCalls"} <= names
    assert {
        "FitCheckAvailabilityBudgetBurn",
        "FitCheckFirstEventLatencyBudgetBurn",
        "FitCheckStreamLatencyBudgetBurn",
        "slo:sli_error:ratio_rate5m",
        "slo:period_error_budget_remaining:ratio",
    } <= names
