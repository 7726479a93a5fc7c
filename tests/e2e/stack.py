"""The real stack on loopback, as the e2e tests drive it: Jaeger v2, VictoriaLogs, the
Collector, Prometheus, and fit-check service processes exporting to them (``Stack``,
``Service``), and ``poll`` for waiting on what they show.

``tests/e2e/conftest.py`` starts one per session through ``deploy/local/stack.sh`` (the
same script and configs a developer uses), on free ports in a run dir of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import Events, parse_sse
from tests.service_process import free_port

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.sh"
CACHE = Path(os.environ.get("FIT_CHECK_CACHE", Path.home() / ".cache" / "fit-check"))
PORT_NAMES = (
    "OTEL_COLLECTOR_OTLP_GRPC_PORT",
    "OTEL_COLLECTOR_OTLP_HTTP_PORT",
    "OTEL_COLLECTOR_PROMETHEUS_PORT",
    "OTEL_COLLECTOR_TELEMETRY_PORT",
    "OTEL_COLLECTOR_HEALTH_PORT",
    "JAEGER_OTLP_GRPC_PORT",
    "JAEGER_OTLP_HTTP_PORT",
    "JAEGER_QUERY_HTTP_PORT",
    "JAEGER_QUERY_GRPC_PORT",
    "JAEGER_HEALTH_PORT",
    "JAEGER_METRICS_PORT",
    "PROMETHEUS_PORT",
    "VICTORIALOGS_PORT",
)


#: The metrics only an instance with a shared session store (Redis) exports.
STORE_METRICS = ("fit_check_session_store_", "fit_check_streams_interrupted_")


def dashboard_queries(*, store: bool, datasource: str = "prometheus") -> list[str]:
    """The dashboard's PromQL on ``datasource``: those of the shared store's panels
    (``store``), or all the others."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/fit-check.json").read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr") and target["datasource"]["uid"] == datasource
    ]
    return [
        e.replace("$__rate_interval", "1m").replace("$__interval", "1m")
        for e in exprs
        if any(metric in e for metric in STORE_METRICS) == store
    ]


def poll(
    probe: Callable[[], Any],
    *,
    timeout_s: float = 90,
    every_s: float = 0.5,
    what: str = "condition",
) -> Any:
    """Call ``probe`` until it returns something truthy; fail with its last answer."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"{what} not met in {timeout_s}s; last: {last!r}")


def missing_tools() -> list[str]:
    tools = {
        "collector": CACHE / "bin" / "otelcol-fit-check",
        "jaeger": CACHE / "bin" / "jaeger",
        "victoria-logs": CACHE / "bin" / "victoria-logs",
    }
    missing = [name for name, path in tools.items() if not os.access(path, os.X_OK)]
    if not (CACHE / "bin" / "prometheus").exists() and shutil.which("prometheus") is None:
        missing.append("prometheus")
    return missing


@dataclass
class Service:
    """One fit-check process exporting to the collector.

    ``log_path`` is its stdout; ``json_log`` the JSON lines it appends for the collector's
    file log receiver (``FIT_CHECK_LOG_FILE``), which ships them to VictoriaLogs.
    """

    name: str
    port: int
    log_path: Path
    json_log: Path
    process: subprocess.Popen[bytes]
    sent: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stream(
        self, session_id: str | None = None, query: str = "Python, Kafka, AWS"
    ) -> tuple[str, float, Events]:
        """One full stream; returns (trace id, seconds, events)."""

        body = {"query": query, "session_id": session_id or f"e2e-{uuid.uuid4().hex[:12]}"}
        started = time.perf_counter()
        response = httpx.post(f"{self.url}/api/fit-check/stream", json=body, timeout=30)
        elapsed = time.perf_counter() - started
        self.sent += 1
        events = parse_sse(response.text)
        assert events[-1][0] == "complete", events[-1]
        return events[0][1]["trace_id"], elapsed, events

    def log_lines(self, *, ended: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The JSON lines of its stdout; ``ended``: see ``settled``."""

        def read() -> list[dict[str, Any]]:
            lines = self.log_path.read_text().splitlines()
            return [json.loads(raw) for raw in lines if raw.startswith("{")]

        return settled(read, ended)

    def json_log_lines(self, *, ended: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The lines of its log file; ``ended``: see ``settled``."""

        def read() -> list[dict[str, Any]]:
            return [json.loads(raw) for raw in self.json_log.read_text().splitlines()]

        return settled(read, ended)


def settled(
    read: Callable[[], list[dict[str, Any]]], trace_ids: Iterable[str]
) -> list[dict[str, Any]]:
    """The lines once each of ``trace_ids`` has its "Request completed" line.

    A stream's last line is written just after its client got the last event (the session
    waits until its terminal frame is delivered), so a read right after a stream can miss it.
    """
    wanted = set(trace_ids)
    if not wanted:
        return read()

    def complete() -> list[dict[str, Any]] | None:
        lines = read()
        done = {x.get("trace_id") for x in lines if x.get("message") == "Request completed"}
        return lines if wanted <= done else None

    lines: list[dict[str, Any]] = poll(
        complete, timeout_s=30, every_s=0.05, what=f"the last lines of {len(wanted)} streams"
    )
    return lines


@dataclass
class Stack:
    env: dict[str, str]
    run_dir: Path
    services: list[Service] = field(default_factory=list)

    def port(self, name: str) -> int:
        return int(self.env[name])

    @property
    def jaeger(self) -> str:
        return f"http://127.0.0.1:{self.port('JAEGER_QUERY_HTTP_PORT')}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.port('PROMETHEUS_PORT')}"

    @property
    def victorialogs(self) -> str:
        return f"http://127.0.0.1:{self.port('VICTORIALOGS_PORT')}"

    def logsql(self, query: str) -> list[dict[str, Any]]:
        """Every log record VictoriaLogs holds that matches the LogsQL ``query``."""
        response = httpx.post(
            f"{self.victorialogs}/select/logsql/query", data={"query": query}, timeout=10
        )
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line]

    def script(self, *args: str) -> None:
        subprocess.run([str(STACK), *args], env=self.env, check=True, timeout=180)

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.prometheus}/api/v1/query", params={"query": promql}, timeout=10
        )
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_exemplars(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.prometheus}/api/v1/query_exemplars",
            params={"query": promql, "start": start, "end": end},
            timeout=10,
        )
        body = response.json()
        assert body["status"] == "success", body
        data: list[dict[str, Any]] = body["data"]
        return data

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.jaeger}/api/traces/{trace_id}", timeout=10)
        if response.status_code != 200:
            return []
        data = response.json().get("data") or []
        return data[0]["spans"] if data else []

    def collector_pid(self) -> int:
        return int((self.run_dir / "collector.pid").read_text())

    def restart_collector(self, while_down: Callable[[], object] | None = None, **env: str) -> None:
        """Stop the collector as a deploy does (SIGTERM, wait for the exit), poll
        ``while_down`` meanwhile, then start it again with ``env`` over the stack's."""
        pid = self.collector_pid()
        os.kill(pid, signal.SIGTERM)
        poll(
            lambda: not Path(f"/proc/{pid}").exists(),
            timeout_s=30,
            every_s=0.1,
            what="the collector's exit",
        )
        if while_down is not None:
            poll(while_down, timeout_s=60, every_s=0.1, what="while the collector is down")
        subprocess.run([str(STACK), "up"], env={**self.env, **env}, check=True, timeout=180)

    def restart(self, component: str, **env: str) -> None:
        """Stop one of the stack's processes with SIGTERM, wait for its exit, and start it
        again with ``env`` over the stack's."""
        pid = int((self.run_dir / f"{component}.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        poll(
            lambda: not Path(f"/proc/{pid}").exists(),
            timeout_s=30,
            every_s=0.1,
            what=f"{component}'s exit",
        )
        subprocess.run([str(STACK), "up"], env={**self.env, **env}, check=True, timeout=180)

    def start_service(self, name: str, port: int | None = None, **extra_env: str) -> Service:
        port = port or free_port()
        log_path = self.run_dir / f"{name}.log"
        json_log = self.run_dir / "logs" / f"{name}.log"
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port('OTEL_COLLECTOR_OTLP_HTTP_PORT')}",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            "FIT_CHECK_LOG_FILE": str(json_log),
            **extra_env,
        }
        env.pop("OTEL_SDK_DISABLED", None)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "fit-check"), "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(
            name=name, port=port, log_path=log_path, json_log=json_log, process=process
        )
        poll(
            lambda: httpx.get(f"{service.url}/health", timeout=1).status_code == 200,
            timeout_s=30,
            every_s=0.1,
            what=f"{name} healthy",
        )
        self.services.append(service)
        return service

    def stop_services(self) -> None:
        for service in self.services:
            if service.process.poll() is None:
                os.killpg(service.process.pid, signal.SIGTERM)
                try:
                    service.process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(service.process.pid, signal.SIGKILL)
