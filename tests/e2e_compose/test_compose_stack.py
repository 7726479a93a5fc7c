"""docker-compose.yml run by a real Docker engine (``make e2e-compose``), checked through
its published ports and ``docker compose`` as a user would.

The stack is every service of docker-compose.yml but Grafana, from the images run.sh built
with no registry; Grafana is not started (its image can be neither pulled nor built
here). The tests run in file order on a stack that starts empty (``down -v`` before
``up``): the request count in Prometheus is checked against every stream sent so far, and
the last test is the one that may leave a line twice in VictoriaLogs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from functools import partial
from typing import Any

import httpx
import pytest

from app.pipeline.events import PHASES
from tests.e2e.stack import poll
from tests.e2e_compose.conftest import (
    NOT_STARTED,
    SERVICE,
    ComposeStack,
    LineKey,
    line_key,
)
from tests.helpers import parse_sse

pytestmark = [pytest.mark.compose, pytest.mark.timeout(300)]

REQUEST_SPAN = "POST /api/fit-check/stream"

#: The trace id of every stream sent to the stack: what sum(fit_check_requests_total)
#: counts (the collector serves a stopped instance's series for minutes more).
sent: list[str] = []


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def whole_trace(stack: ComposeStack, trace_id: str) -> list[dict[str, Any]] | None:
    """The trace once its request span and its five phases are in Jaeger."""
    spans = stack.trace(trace_id)
    names = [span["operationName"] for span in spans]
    phases = [name for name in names if name.startswith("fit_check.phase ")]
    return spans if REQUEST_SPAN in names and len(phases) == len(PHASES) else None


def send(stack: ComposeStack, session_id: str | None = None) -> str:
    trace_id: str = stack.stream(session_id)[0][1]["trace_id"]
    sent.append(trace_id)
    return trace_id


def resent_lines(stack: ComposeStack) -> tuple[list[LineKey], Counter[LineKey]]:
    """The lines of the service's log file in order, once VictoriaLogs holds every one of
    them, and those VictoriaLogs holds more often than the file has them.

    The file grows meanwhile (the health check's access lines): what VictoriaLogs holds
    must cover the file as it was before the query, and is compared with the file as it is
    after it.
    """
    written = [line_key(line) for line in stack.log_file_lines()]
    query = 'log.file.name:="fit-check.log"'

    def covered() -> Counter[LineKey] | None:
        stored = Counter(map(line_key, stack.logsql(query)))
        return stored if not Counter(written) - stored else None

    stored: Counter[LineKey] = poll(
        covered, timeout_s=90, every_s=1, what=f"all {len(written)} lines in VictoriaLogs"
    )
    return written, stored - Counter(map(line_key, stack.log_file_lines()))


def stored_exactly_once(stack: ComposeStack) -> None:
    """Every line of the service's log file is in VictoriaLogs exactly once."""
    _, resent = resent_lines(stack)
    assert not resent, {"duplicated or unknown": resent}


def test_every_published_port_is_bound_to_loopback(stack: ComposeStack) -> None:
    """What compose publishes is what docker-compose.yml says, on 127.0.0.1 only."""
    config = stack.config()["services"]
    expected = {
        (name, int(port["published"]))
        for name in stack.services()
        for port in config[name].get("ports", [])
    }
    assert {port for _, port in expected} >= {8000, 4317, 4318, 9090, 9428, 16686}
    published: set[tuple[str, int]] = set()
    for container in stack.containers():
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        assert service != NOT_STARTED
        if container["State"]["Status"] != "running":
            continue
        bindings = container["HostConfig"]["PortBindings"] or {}
        live = container["NetworkSettings"]["Ports"] or {}
        for binding in [b for bs in bindings.values() for b in bs or []] + [
            b for bs in live.values() for b in bs or []
        ]:
            assert binding["HostIp"] == "127.0.0.1", (service, binding)
            published.add((service, int(binding["HostPort"])))
    assert published == expected


def test_jaeger_and_every_service_with_a_health_check_turn_healthy(stack: ComposeStack) -> None:
    """Jaeger is probed (its image has busybox wget), so the collector starts only once
    Jaeger takes traces; the collector alone cannot be probed (distroless). fit-check's
    check is its image's HEALTHCHECK."""
    config = stack.config()["services"]
    probed = {name for name in stack.services() if "healthcheck" in config[name]}
    assert {"jaeger", "victorialogs", "prometheus"} <= probed
    probed.add("fit-check")
    assert config["otel-collector"]["depends_on"]["jaeger"]["condition"] == "service_healthy"

    def health() -> dict[str, str] | None:
        states = {
            c["Config"]["Labels"]["com.docker.compose.service"]: c["State"]
            .get("Health", {})
            .get("Status", "none")
            for c in stack.containers()
            if c["State"]["Status"] == "running"
        }
        return states if all(states.get(name) == "healthy" for name in probed) else None

    poll(health, timeout_s=90, what="every probed service healthy")


def test_grafana() -> None:
    pytest.skip(
        "Grafana is not started by make e2e-compose: its image can be neither pulled nor "
        "built without a registry (the other services run from stand-in images)"
    )


def test_a_stream_reaches_jaeger_prometheus_and_victorialogs(stack: ComposeStack) -> None:
    started = time.time()
    trace_id = send(stack, "compose-stream-1")
    # A newcomer's first trace is in Jaeger at once (make up keeps every trace, decided 2 s
    # after its first span): within 10 s of its stream's end.
    spans = poll(partial(whole_trace, stack, trace_id), timeout_s=10, what="the trace in Jaeger")
    names = [span["operationName"] for span in spans]
    assert sorted(n for n in names if n.startswith("fit_check.phase ")) == sorted(
        f"fit_check.phase {phase}" for phase in PHASES
    )
    assert all(tags(span).get("session_id") == "compose-stream-1" for span in spans)

    for n in range(2):
        send(stack, f"compose-stream-{n + 2}")
    poll(
        lambda: stack.scalar("sum(fit_check_requests_total)") == len(sent),
        timeout_s=90,
        what=f"sum(fit_check_requests_total) == {len(sent)} in Prometheus",
    )
    assert stack.scalar('sum(fit_check_requests_total{status="success"})') == len(sent)

    def exemplar_of_ours() -> set[str]:
        send(stack)
        ids = stack.exemplar_trace_ids("fit_check_request_duration_seconds_bucket", started)
        return ids & set(sent)

    linked = poll(exemplar_of_ours, timeout_s=90, every_s=1, what="an exemplar of our streams")
    poll(
        partial(whole_trace, stack, next(iter(linked))),
        timeout_s=60,
        what="the exemplar's trace in Jaeger",
    )

    written = stack.lines_of(trace_id)
    assert len(written) >= 2 + 2 * len(PHASES)  # the request's and each phase's start and end
    query = f'trace_id:="{trace_id}"'
    stored = poll(
        lambda: (found := stack.logsql(query)) and len(found) >= len(written) and found,
        timeout_s=60,
        what=f"the {len(written)} lines of {trace_id} in VictoriaLogs",
    )
    assert sorted(map(line_key, stored)) == sorted(map(line_key, written))
    assert {line["span_id"] for line in stored} <= {span["spanID"] for span in spans}


def test_a_collector_restart_between_requests_loses_and_duplicates_no_log_line(
    stack: ComposeStack,
) -> None:
    """`docker compose restart otel-collector` once the lines so far are shipped: afterwards
    VictoriaLogs holds every line of the service's file exactly once, those written while
    it was down included (the file log receiver's offsets are on the collector-storage
    volume)."""
    for _ in range(3):
        send(stack)
    stored_exactly_once(stack)
    started = stack.container("otel-collector")["State"]["StartedAt"]
    stack.compose("restart", "otel-collector")
    for _ in range(3):
        send(stack)
    collector = stack.container("otel-collector")
    assert collector["State"]["StartedAt"] != started  # it did stop and start
    assert collector["RestartCount"] == 0  # by compose, not by Docker after a crash
    stored_exactly_once(stack)


def test_compose_stop_ends_a_slow_stream_with_shutting_down_and_exits_0(
    stack: ComposeStack,
) -> None:
    """`docker compose stop fit-check` (SIGTERM) while a slow stream runs: the stream gets
    its terminal ``error`` event SHUTTING_DOWN once the drain's grace is over, the
    container exits 0 within compose's stop_grace_period, and the stream's trace, flushed
    on the way out, reaches Jaeger."""
    stack.up("fit-check", FIT_CHECK_LATENCY_MS="2000", FIT_CHECK_SHUTDOWN_GRACE_S="1")
    opened = threading.Event()
    body: list[str] = []

    def one() -> None:
        with httpx.stream(
            "POST",
            f"{SERVICE}/api/fit-check/stream",
            json={"query": "Go, Kubernetes", "session_id": "compose-stop-1"},
            timeout=90,
            trust_env=False,
        ) as response:
            for chunk in response.iter_text():
                body.append(chunk)
                if "event: session" in "".join(body):
                    opened.set()

    reader = threading.Thread(target=one)
    reader.start()
    try:
        assert opened.wait(30), "no session event"
        stack.compose("stop", "fit-check")
    finally:
        reader.join(60)
    events = parse_sse("".join(body))
    assert events[0][0] == "session"
    assert events[-1][0] == "error" and events[-1][1]["code"] == "SHUTTING_DOWN", events[-1]
    assert [name for name, _ in events].count("error") == 1
    state = stack.container("fit-check")["State"]
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False)

    trace_id = events[0][1]["trace_id"]
    sent.append(trace_id)  # counted, as cancelled

    def root() -> dict[str, Any] | None:
        spans = stack.trace(trace_id)
        return next((s for s in spans if s["operationName"] == REQUEST_SPAN), None)

    request_span = poll(root, timeout_s=60, what="the stopped stream's trace in Jaeger")
    assert tags(request_span)["fit_check.outcome"] == "cancelled"
    stack.up("fit-check")  # back to docker-compose.yml's settings


def test_down_then_up_keeps_traces_metrics_and_logs(stack: ComposeStack) -> None:
    """`docker compose down` (no -v) then `up`: Jaeger (Badger), Prometheus (TSDB) and
    VictoriaLogs still answer for what they held, from their volumes; the collector reads
    on from its saved offsets, so no line is shipped twice."""
    trace_id = send(stack, "compose-down-up-1")
    spans = poll(partial(whole_trace, stack, trace_id), timeout_s=60, what="the trace")
    written = stack.lines_of(trace_id)
    poll(
        lambda: len(stack.logsql(f'trace_id:="{trace_id}"')) >= len(written),
        timeout_s=60,
        what="its lines in VictoriaLogs",
    )
    poll(
        lambda: stack.scalar("sum(fit_check_requests_total)") == len(sent),
        timeout_s=90,
        what="the stream counted in Prometheus",
    )
    at = time.time()
    counted = stack.scalar("sum(fit_check_requests_total)", at)
    assert counted == len(sent)

    stack.compose("down", timeout_s=120)
    assert stack.containers() == []
    stack.up()

    assert sorted(s["spanID"] for s in stack.trace(trace_id)) == sorted(s["spanID"] for s in spans)
    assert stack.scalar("sum(fit_check_requests_total)", at) == counted
    after_up = send(stack, "compose-down-up-2")
    poll(
        lambda: stack.logsql(f'trace_id:="{after_up}" "Request completed"'),
        timeout_s=60,
        what="a new stream's lines in VictoriaLogs (the collector reads again)",
    )
    assert sorted(map(line_key, stack.logsql(f'trace_id:="{trace_id}"'))) == sorted(
        map(line_key, written)
    )
    stored_exactly_once(stack)


def test_a_collector_restart_under_traffic_loses_no_line_and_resends_at_most_one_batch(
    stack: ComposeStack,
) -> None:
    """Streams keep coming while `docker compose restart otel-collector` stops and starts
    the collector: no line of the service's file is missing from VictoriaLogs.

    Exactly once is not what the collector promises here: its file log receiver (0.165.0)
    checkpoints a batch only once the batch's export has returned, and a SIGTERM that
    cancels an export in flight leaves that batch to be read again after the restart
    (pkg/stanza fileconsumer/internal/reader/reader.go: "If the context was cancelled
    during the emit, the batch may not have been consumed, so we don't want to checkpoint
    it"). When VictoriaLogs had stored it already, its lines are there twice: consecutive
    lines of the file, each once more, and nothing else. Last in the module: the whole-file
    checks before it expect each line once.
    """
    stop = threading.Event()
    errors: list[BaseException] = []

    def traffic() -> None:
        try:
            while not stop.is_set():
                send(stack)
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    stored_exactly_once(stack)
    before = len(sent)
    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        poll(lambda: len(sent) >= before + 3 or errors, timeout_s=60, what="traffic before")
        stack.compose("restart", "otel-collector")
        during = len(sent)
        poll(lambda: len(sent) >= during + 3 or errors, timeout_s=60, what="traffic after")
    finally:
        stop.set()
        worker.join(60)
    assert not errors, errors

    written, resent = resent_lines(stack)
    assert set(resent.values()) <= {1}, resent  # twice at most
    if resent:  # one batch: consecutive lines of the file
        positions = sorted(written.index(key) for key in resent)
        assert positions == list(range(positions[0], positions[0] + len(positions))), resent
