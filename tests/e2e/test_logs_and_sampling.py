"""Logs in VictoriaLogs, linked with traces both ways, and tail sampling at the collector.

Through the real file log receiver, VictoriaLogs, Collector, Jaeger and Prometheus
(``make e2e``). The last tests restart the collector with other sampling settings and
leave it as they found it.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from typing import Any

import httpx
import pytest

from app.pipeline.events import PHASES
from tests.e2e.stack import ROOT, Service, Stack, dashboard_queries, poll
from tests.helpers import parse_sse

pytestmark = pytest.mark.e2e

DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/datasources.yml"


def provisioned(uid: str) -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    sources: list[dict[str, Any]] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return next(source for source in sources if source["uid"] == uid)


def trace_to_logs_query(trace_id: str) -> str:
    """The LogsQL query Grafana runs from a trace in Jaeger (its trace-to-logs setting);
    ``$$`` is the provisioning file's escape for a literal ``$``."""
    template: str = provisioned("jaeger")["jsonData"]["tracesToLogsV2"]["query"]
    return template.replace("$${__span.traceId}", trace_id)


def key(line: dict[str, Any]) -> tuple[str, str, datetime]:
    """What identifies a line in the file and in VictoriaLogs alike: the file writes
    ``...12.749460+00:00``, VictoriaLogs ``...12.74946Z``, the same instant."""
    message = line.get("message", line.get("_msg", ""))
    return (
        line.get("span_id", ""),
        message,
        datetime.fromisoformat(line.get("_time") or line["timestamp"]),
    )


def file_lines(service: Service, trace_id: str) -> list[dict[str, Any]]:
    lines = service.json_log_lines(ended=[trace_id])
    return [line for line in lines if line.get("trace_id") == trace_id]


def test_a_requests_lines_in_victorialogs_are_exactly_those_it_wrote(stack: Stack) -> None:
    service = stack.services[0]
    session_id = "logs-exact-1"
    trace_id, _, _ = service.stream(session_id)
    written = file_lines(service, trace_id)
    assert len(written) >= 2 + 2 * len(PHASES), written  # request and phase lines
    query = trace_to_logs_query(trace_id)
    stored = poll(
        lambda: (found := stack.logsql(query)) and len(found) >= len(written) and found,
        timeout_s=60,
        what=f"{len(written)} lines of {trace_id} in VictoriaLogs",
    )
    assert sorted(map(key, stored)) == sorted(map(key, written))
    for line in stored:
        assert line["trace_id"] == trace_id and len(line["span_id"]) == 16
        assert line["session_id"] == session_id
        assert line["severity_text"] == "INFO"
    # The other keys are fields to filter on.
    phase = PHASES[1]
    by_fields = stack.logsql(
        f'session_id:="{session_id}" phase:="{phase}" status:="success" trace_id:="{trace_id}"'
    )
    assert [line["_msg"] for line in by_fields] == ["Phase completed"]


def test_a_log_lines_trace_id_opens_its_trace_and_the_trace_its_lines(stack: Stack) -> None:
    """The hops Grafana makes: exemplar -> trace (Jaeger), trace -> lines (the trace-to-logs
    query), line -> trace (the VictoriaLogs datasource's derived field on ``trace_id``)."""
    derived = provisioned("victorialogs")["jsonData"]["derivedFields"][0]
    assert derived["datasourceUid"] == "jaeger" and derived["matcherType"] == "label"
    trace_ids: set[str] = set()

    def exemplar_trace_ids() -> set[str]:
        trace_ids.add(stack.services[0].stream()[0])
        now = time.time()
        found = stack.query_exemplars("fit_check_request_duration_seconds_bucket", now - 600, now)
        return {ex["labels"].get("trace_id") for series in found for ex in series["exemplars"]}

    hits = poll(
        lambda: exemplar_trace_ids() & trace_ids or None,
        timeout_s=90,
        what="an exemplar with one of our trace ids",
    )
    trace_id = next(iter(hits))
    spans = poll(lambda: stack.trace(trace_id), timeout_s=60, what="the exemplar's trace")
    lines = poll(
        lambda: stack.logsql(trace_to_logs_query(trace_id)),
        timeout_s=60,
        what="the trace's lines in VictoriaLogs",
    )
    span_ids = {span["spanID"] for span in spans}
    assert {line["span_id"] for line in lines} <= span_ids  # each line names a span of it
    linked = lines[0][derived["matcherRegex"]]
    assert {span["spanID"] for span in stack.trace(linked)} == span_ids


async def test_the_demo_pages_logs_link_opens_the_sessions_lines_in_vmui(stack: Stack) -> None:
    """VictoriaLogs' own web UI, no Grafana: the demo page links the session's lines."""
    from playwright.async_api import expect

    from tests.e2e.chromium import chromium_page

    service = extra_service(stack, "fit-check-logs-link", FIT_CHECK_LOGS_UI_URL=stack.victorialogs)
    try:
        async with chromium_page() as page:
            await page.goto(f"{service.url}/?query=Python%2C%20Kafka")
            await expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=30_000)
            session_id = await page.locator("#session-id").inner_text()
            href = await page.locator("#logs-link").get_attribute("href")
            assert href and href.startswith(f"{stack.victorialogs}/select/vmui/")
            poll(
                lambda: stack.logsql(f'session_id:="{session_id}" "Request completed"'),
                timeout_s=60,
                what="the session's last line in VictoriaLogs",
            )
            async with page.expect_popup() as opened:
                await page.locator("#logs-link").click()
            vmui = await opened.value
            await expect(vmui.get_by_text("Request completed").first).to_be_visible(timeout=30_000)
            shown = await vmui.locator("body").inner_text()
            query = await vmui.locator("textarea").first.input_value()
    finally:
        stop(stack, service)
    assert query == f'session_id:="{session_id}"'
    assert "Last 24 hours" in shown


def test_the_dashboards_logs_panel_shows_errors_with_their_trace(stack: Stack) -> None:
    (panel_query,) = dashboard_queries(store=False, datasource="victorialogs")
    faulty = extra_service(stack, "fit-check-faulty", FIT_CHECK_FAULT_RATE_LLM="1")
    try:
        trace_id, events = post(faulty, "logs-error-1")
        assert events[-1][1]["code"] == "LLM_ERROR"
        errors = poll(
            lambda: [
                line for line in stack.logsql(panel_query) if line.get("trace_id") == trace_id
            ],
            timeout_s=60,
            what="the failed request's error lines in the dashboard's logs panel",
        )
        assert all(line["level"] in {"WARNING", "ERROR", "CRITICAL"} for line in errors)
        assert all(line["session_id"] == "logs-error-1" for line in errors)
    finally:
        stop(stack, faulty)


def test_a_collector_restart_loses_and_duplicates_no_line(stack: Stack) -> None:
    """Streams keep coming while the collector stops and starts again: VictoriaLogs ends
    with every line of the service's file exactly once (the receiver's checkpoint)."""
    service = stack.services[1]
    name = service.json_log.name
    stop_traffic = threading.Event()
    sent: list[str] = []

    def traffic() -> None:
        n = 0
        while not stop_traffic.is_set():
            sent.append(service.stream(f"restart-{n}")[0])
            n += 1

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        poll(lambda: len(sent) >= 5, timeout_s=60, every_s=0.1, what="traffic before")
        stack.restart_collector(lambda: len(sent) >= 10)  # 5 more while it is down
        count = len(sent)
        poll(lambda: len(sent) >= count + 5, timeout_s=60, every_s=0.1, what="traffic after")
    finally:
        stop_traffic.set()
        worker.join(60)
    written = service.json_log_lines(ended=sent)
    query = f'log.file.name:="{name}"'
    stored = poll(
        lambda: (found := stack.logsql(query)) and len(found) >= len(written) and found,
        timeout_s=90,
        what=f"all {len(written)} lines of {name} in VictoriaLogs",
    )
    lost = Counter(map(key, written)) - Counter(map(key, stored))
    duplicated = Counter(map(key, stored)) - Counter(map(key, written))
    assert not lost and not duplicated, {"lost": lost, "duplicated": duplicated}


# --- tail sampling ---------------------------------------------------------------------


def post(service: Service, session_id: str) -> tuple[str, list[tuple[str, Any]]]:
    response = httpx.post(
        f"{service.url}/api/fit-check/stream",
        json={"query": "Python, Kafka", "session_id": session_id},
        timeout=30,
    )
    events = parse_sse(response.text)
    return events[0][1]["trace_id"], events


def walk_away(service: Service, session_id: str) -> str:
    """A client that leaves after the first event: the session ends ``cancelled``."""
    with httpx.stream(
        "POST",
        f"{service.url}/api/fit-check/stream",
        json={"query": "Go", "session_id": session_id},
        timeout=30,
    ) as response:
        for chunk in response.iter_text():
            events = parse_sse(chunk)
            if events:
                trace_id: str = events[0][1]["trace_id"]
                return trace_id
    raise AssertionError("no event before the stream ended")


def extra_service(stack: Stack, name: str, **env: str) -> Service:
    """A service for one test: traces and logs only, so the request counts that
    test_stack.py compares with Prometheus stay those of the stack's own two services."""
    return stack.start_service(name, None, OTEL_METRICS_EXPORTER="none", **env)


def stop(stack: Stack, service: Service) -> None:
    os.killpg(service.process.pid, signal.SIGTERM)
    service.process.wait(15)
    stack.services.remove(service)


def root_outcome(stack: Stack, trace_id: str) -> str | None:
    for span in stack.trace(trace_id):
        if span["operationName"] == "POST /api/fit-check/stream" and not span.get("references"):
            tags = {tag["key"]: tag["value"] for tag in span.get("tags", [])}
            return str(tags.get("fit_check.outcome"))
    return None


@pytest.fixture(scope="module")
def unlucky(stack: Stack) -> Iterator[dict[str, Service]]:
    """Services whose requests fail, time out, are left, or are slow but succeed."""
    services = {
        "error": extra_service(stack, "fit-check-errors", FIT_CHECK_FAULT_RATE_LLM="1"),
        "slow": extra_service(
            stack,
            "fit-check-slow",
            FIT_CHECK_LATENCY_MS="1500",
            FIT_CHECK_REQUEST_TIMEOUT_S="1",
            FIT_CHECK_RESUME_WINDOW_S="0",
        ),
        "slow-success": extra_service(stack, "fit-check-slow-success", FIT_CHECK_LATENCY_MS="400"),
    }
    yield services
    for service in services.values():
        stop(stack, service)


def one_of_each(stack: Stack, unlucky: dict[str, Service], tag: str) -> dict[str, list[str]]:
    """Fast successes first, then the others: once the last traces are decided, so are
    the first (the collector decides a trace a fixed wait after its first span)."""
    traces: dict[str, list[str]] = {"success": [], "error": [], "timeout": [], "cancelled": []}
    for n in range(3):
        traces["success"].append(stack.services[0].stream(f"{tag}-ok-{n}")[0])
    for n in range(2):
        traces["error"].append(post(unlucky["error"], f"{tag}-err-{n}")[0])
        trace_id, events = post(unlucky["slow"], f"{tag}-timeout-{n}")
        assert events[-1][1]["code"] == "TIMEOUT"
        traces["timeout"].append(trace_id)
        traces["cancelled"].append(walk_away(unlucky["slow"], f"{tag}-gone-{n}"))
    return traces


def test_at_a_zero_share_only_errors_timeouts_cancelled_and_slow_traces_are_kept(
    stack: Stack, unlucky: dict[str, Service]
) -> None:
    stack.restart_collector(
        FIT_CHECK_TRACE_SAMPLE_PERCENT="0",
        FIT_CHECK_TRACE_DECISION_WAIT="2s",
        FIT_CHECK_TRACE_SLOW_MS="1000",
    )
    try:
        traces = one_of_each(stack, unlucky, "zero")
        slow_id, seconds, _ = unlucky["slow-success"].stream("zero-slow-ok")
        assert seconds > 1.0
        for outcome in ("error", "timeout", "cancelled"):
            for trace_id in traces[outcome]:
                found = poll(
                    partial(root_outcome, stack, trace_id),
                    timeout_s=60,
                    what=f"{outcome} trace {trace_id} in Jaeger",
                )
                assert found == outcome
        assert poll(partial(root_outcome, stack, slow_id), timeout_s=60) == "success"
        # Every success was decided before the last of the traces above was.
        assert [stack.trace(t) for t in traces["success"]] == [[], [], []]
    finally:
        stack.restart_collector()


def test_at_a_full_share_every_trace_is_kept(stack: Stack, unlucky: dict[str, Service]) -> None:
    stack.restart_collector(
        FIT_CHECK_TRACE_SAMPLE_PERCENT="100", FIT_CHECK_TRACE_DECISION_WAIT="2s"
    )
    try:
        traces = one_of_each(stack, unlucky, "full")
        for outcome, trace_ids in traces.items():
            for trace_id in trace_ids:
                found = poll(
                    partial(root_outcome, stack, trace_id),
                    timeout_s=60,
                    what=f"{outcome} trace {trace_id} in Jaeger",
                )
                assert found == outcome
    finally:
        stack.restart_collector()
