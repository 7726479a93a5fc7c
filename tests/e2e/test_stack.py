"""End to end through the real Collector, Jaeger and Prometheus (``make e2e``).

Order matters for the last three tests: one kills the collector, two add an instance.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import threading
from functools import partial
from typing import Any

import httpx
import pytest

from app.pipeline.events import PHASES
from tests.e2e.stack import ROOT, Stack, dashboard_queries, poll
from tests.helpers import parse_sse
from tests.service_process import free_port

pytestmark = pytest.mark.e2e

SPEC_APPENDIX = [
    "fit_check_active_sessions",
    "rate(fit_check_requests_total[5m])",
    "histogram_quantile(0.95, rate(fit_check_request_duration_seconds_bucket[5m]))",
    "rate(fit_check_phase_completions_total[5m])",
    "fit_check_circuit_breaker_state",
    'rate(fit_check_requests_total{status="error"}[5m]) / rate(fit_check_requests_total[5m])',
]

#: The series of the stack's own two services (``stack.services``): other tests start
#: services of their own (replicas, priced providers) under other service names.
OWN = '{job="fit-check"}'


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def whole_trace(stack: Stack, trace_id: str) -> list[dict[str, Any]] | None:
    spans = stack.trace(trace_id)
    return spans if len(spans) >= 10 else None


def test_each_trace_reaches_jaeger_whole(stack: Stack) -> None:
    service = stack.services[0]
    for n in range(3):
        session_id = f"jaeger-{n}"
        trace_id, _, _ = service.stream(session_id)
        spans = poll(
            partial(whole_trace, stack, trace_id),
            timeout_s=60,
            what=f"trace {trace_id} in Jaeger",
        )
        names = [span["operationName"] for span in spans]
        assert "POST /api/fit-check/stream" in names
        assert sorted(n for n in names if n.startswith("fit_check.phase ")) == sorted(
            f"fit_check.phase {p}" for p in PHASES
        )
        assert names.count("chat offline-analyzer") == 3
        assert names.count("search offline") == 1
        assert all(tags(span).get("session_id") == session_id for span in spans)


def fit_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "fit-check"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def test_the_cli_reads_a_trace_from_the_real_jaeger(stack: Stack) -> None:
    service = stack.services[0]
    trace_id, _, _ = service.stream("cli-trace-1")
    poll(lambda: len(stack.trace(trace_id)) >= 10, timeout_s=60, what="the trace in Jaeger")
    shown = fit_check("trace", trace_id, "--jaeger", stack.jaeger)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    root = next(line for line in lines if "POST /api/fit-check/stream" in line)
    assert "fit_check.outcome=success" in root and "session_id=cli-trace-1" in root
    for phase in PHASES:
        assert any(f"fit_check.phase {phase}" in line for line in lines), phase
    assert sum("chat offline-analyzer" in line for line in lines) == 3
    missing = fit_check("trace", "0" * 31 + "1", "--jaeger", stack.jaeger)
    assert missing.returncode == 1 and "not in Jaeger" in missing.stderr


def test_ask_with_trace_prints_the_stream_then_its_trace(stack: Stack) -> None:
    service = stack.services[0]
    asked = fit_check(
        "ask", "Python, Kafka", "--url", service.url, "--trace", "--jaeger", stack.jaeger
    )
    service.sent += 1
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "Fit report" in asked.stdout
    assert "fit_check.phase generate_results" in asked.stdout
    assert "fit_check.outcome=success" in asked.stdout


def test_json_logs_hold_each_trace_id(stack: Stack) -> None:
    service = stack.services[1]
    trace_ids = [service.stream(f"logs-{n}")[0] for n in range(2)]
    lines = service.log_lines(ended=trace_ids)
    for trace_id in trace_ids:
        mine = [line for line in lines if line.get("trace_id") == trace_id]
        messages = {line["message"] for line in mine}
        assert {"Request started", "Phase completed", "Request completed"} <= messages


def test_sums_in_prometheus_equal_what_was_sent_to_both_instances(stack: Stack) -> None:
    a, b = stack.services
    for _ in range(4):
        a.stream()
    for _ in range(3):
        b.stream()
    sent = a.sent + b.sent
    poll(
        lambda: stack.scalar(f"sum(fit_check_requests_total{OWN})") == sent,
        timeout_s=90,
        what=f"sum(fit_check_requests_total{OWN}) == {sent}",
    )
    by_instance = stack.query(f"sum by (instance) (fit_check_requests_total{OWN})")
    assert sorted(float(r["value"][1]) for r in by_instance) == sorted([a.sent, b.sent])
    assert len(stack.query(f"fit_check_build_info{OWN}")) == 2


def test_every_spec_and_dashboard_query_returns_data(stack: Stack) -> None:
    """The shared store's panels have data only from instances with Redis:
    tests/e2e/test_replicas.py checks them."""
    queries = SPEC_APPENDIX + dashboard_queries(store=False)
    assert len(queries) >= len(SPEC_APPENDIX) + 8
    service = stack.services[0]

    def all_answer() -> list[str] | None:
        service.stream()  # keep the rates above zero while we wait for two scrapes
        empty = [q for q in queries if not stack.query(q)]
        return None if empty else queries

    try:
        poll(all_answer, timeout_s=120, every_s=2, what="every query has data")
    except AssertionError:
        empty = [q for q in queries if not stack.query(q)]
        raise AssertionError(f"queries without data: {empty}") from None


def test_collector_outage_costs_no_answer_and_data_flows_again(stack: Stack) -> None:
    service = stack.services[0]
    before = [service.stream()[1] for _ in range(10)]
    os.kill(stack.collector_pid(), signal.SIGKILL)
    during = [service.stream()[1] for _ in range(10)]  # each asserts a complete stream
    assert statistics.median(during) < 2 * statistics.median(before) + 0.05, (before, during)

    stack.script("up")  # restarts what is not running: the collector
    trace_id, _, _ = service.stream("after-restart")
    poll(lambda: stack.trace(trace_id), timeout_s=60, what="a new trace after the restart")
    sent = sum(s.sent for s in stack.services)
    poll(
        lambda: stack.scalar(f"sum(fit_check_requests_total{OWN})") == sent,
        timeout_s=90,
        what=f"sum(fit_check_requests_total{OWN}) == {sent} after the restart",
    )


def test_traces_survive_a_jaeger_restart(stack: Stack) -> None:
    """Jaeger keeps its traces on disk (Badger): a restart loses none."""
    trace_id, _, _ = stack.services[0].stream("before-jaeger-restart")
    spans = poll(lambda: len(found := stack.trace(trace_id)) >= 10 and found, what="the trace")
    stack.restart("jaeger", FIT_CHECK_STACK_KEEP_DATA="1")
    assert sorted(s["spanID"] for s in stack.trace(trace_id)) == sorted(s["spanID"] for s in spans)


@pytest.mark.parametrize("span_processor", ["batch", "fastotel"])
def test_a_drained_instance_flushes_the_telemetry_of_the_streams_it_ended(
    stack: Stack, span_processor: str
) -> None:
    """SIGTERM with streams in flight: each ends with SHUTTING_DOWN, and their traces and
    counts reach Jaeger and Prometheus. The metric push interval is longer than the test,
    so only the flush at shutdown can deliver the counts; with spans scheduled an hour
    apart, only the flush can deliver the traces, with either span processor."""
    instance = f"drained-{span_processor}"
    service = stack.start_service(
        f"fit-check-{instance}",
        FIT_CHECK_LATENCY_MS="2000",
        FIT_CHECK_SHUTDOWN_GRACE_S="1",
        FIT_CHECK_SPAN_PROCESSOR=span_processor,
        OTEL_METRIC_EXPORT_INTERVAL="600000",
        OTEL_BSP_SCHEDULE_DELAY="3600000",
        OTEL_RESOURCE_ATTRIBUTES=f"service.instance.id={instance}",
    )
    assert f"/v1/traces{' (fastotel)' if span_processor == 'fastotel' else ''}" in (
        service.log_path.read_text()
    )
    streams = 5
    opened = threading.Semaphore(0)
    bodies: list[str] = []

    def one() -> None:
        text = ""
        with httpx.stream(
            "POST", f"{service.url}/api/fit-check/stream", json={"query": "Go"}, timeout=60
        ) as response:
            for chunk in response.iter_text():
                if not text:
                    opened.release()
                text += chunk
        bodies.append(text)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for _ in range(streams):
        assert opened.acquire(timeout=30)
    service.process.send_signal(signal.SIGTERM)
    service.process.wait(15)
    for thread in threads:
        thread.join(15)

    trace_ids = []
    for body in bodies:
        events = parse_sse(body)
        assert events[-1][0] == "error" and events[-1][1]["code"] == "SHUTTING_DOWN"
        trace_ids.append(events[0][1]["trace_id"])
    assert len(trace_ids) == streams

    def root_span(trace_id: str) -> dict[str, Any] | None:
        spans = stack.trace(trace_id)
        return next((s for s in spans if s["operationName"] == "POST /api/fit-check/stream"), None)

    for trace_id in trace_ids:
        root = poll(partial(root_span, trace_id), timeout_s=60, what=f"root of {trace_id}")
        assert tags(root)["fit_check.outcome"] == "cancelled"
        assert tags(root)["fit_check.cancel_reason"] == "shutdown"
    poll(
        lambda: (
            stack.scalar(
                f'sum(fit_check_requests_total{{status="cancelled",instance="{instance}"}})'
            )
            == streams
        ),
        timeout_s=90,
        what=f"{streams} cancelled requests of the drained instance in Prometheus",
    )


async def test_the_demo_page_links_to_its_trace_with_no_jaeger_ui(stack: Stack) -> None:
    """The local stack's Jaeger has no UI: the trace link opens the service's own trace
    page, which reads the same trace from Jaeger's query API."""
    from playwright.async_api import expect

    from tests.e2e.chromium import chromium_page

    port = free_port()
    service = stack.start_service(
        "fit-check-demo",
        port=port,
        FIT_CHECK_JAEGER_URL=stack.jaeger,
        FIT_CHECK_JAEGER_UI_URL=f"http://127.0.0.1:{port}",
    )
    async with chromium_page() as page:
        await page.goto(f"{service.url}/?query=Python%2C%20Kafka")
        await expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=30_000)
        trace_id = await page.locator("#trace-link").inner_text()
        for _ in range(60):  # the spans reach Jaeger a moment after the stream
            async with page.expect_popup() as opened:
                await page.locator("#trace-link").click()
            popup = await opened.value
            await popup.wait_for_load_state()
            if "fit_check.phase generate_results" in await popup.locator("body").inner_text():
                break
            await popup.close()
            await page.wait_for_timeout(1000)
        tree = await popup.locator("pre").inner_text()
        heading = await popup.locator("h1").inner_text()
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert heading == f"trace {trace_id}"
    assert "POST /api/fit-check/stream" not in tree  # the demo streams with GET
    assert "GET /api/fit-check/stream" in tree and "fit_check.outcome=success" in tree
    assert sum("chat offline-analyzer" in line for line in tree.splitlines()) == 3
