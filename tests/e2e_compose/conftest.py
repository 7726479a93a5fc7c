"""The docker compose stack that ``make e2e-compose`` starts (deploy/compose-e2e/run.sh),
seen from this machine as a user sees it: its published ports on 127.0.0.1, and the
``docker compose`` commands of deploy/compose-e2e/compose.sh.

Tests marked ``compose`` need that stack: they are deselected unless ``-m`` names the
marker, so ``make test`` (``-m 'not e2e'``) and ``make e2e`` (``-m e2e``) leave them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import poll
from tests.helpers import Events, parse_sse

MARKER = "compose"
SERVICE = "http://127.0.0.1:8000"
JAEGER = "http://127.0.0.1:16686"
PROMETHEUS = "http://127.0.0.1:9090"
VICTORIALOGS = "http://127.0.0.1:9428"
COLLECTOR_HEALTH = "http://127.0.0.1:13133"
#: Where the service appends its JSON lines (FIT_CHECK_LOG_FILE in docker-compose.yml), on
#: the volume that volume-owners mounts too.
LOG_FILES = "/var/log/fit-check/*.log*"
NOT_STARTED = "grafana"

#: A log line as the service's file and VictoriaLogs both identify it.
LineKey = tuple[str, str, datetime]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: checks of the docker compose stack `make e2e-compose` starts "
        f"(deselected unless -m names {MARKER})",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MARKER in (config.option.markexpr or ""):
        return  # -m decides
    deselected = [item for item in items if item.get_closest_marker(MARKER)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(MARKER)]


def line_key(line: Mapping[str, Any]) -> LineKey:
    """The file writes ``message`` and ``...12.749460+00:00``; VictoriaLogs answers ``_msg``
    and ``...12.74946Z``, the same instant."""
    message = line.get("message", line.get("_msg", ""))
    stamp = line.get("_time") or line["timestamp"]
    return (str(line.get("span_id", "")), str(message), datetime.fromisoformat(stamp))


class ComposeStack:
    """The running project: compose commands, HTTP clients of its published ports."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.http = httpx.Client(trust_env=False, timeout=30)

    # --- docker compose ------------------------------------------------------------------

    def compose(
        self, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 300
    ) -> str:
        """``compose.sh NAME=VALUE... ARGS``: stdout; fails the test on a non-zero exit."""
        settings = [f"{name}={value}" for name, value in (env or {}).items()]
        done = subprocess.run(
            [str(self.script), *settings, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def services(self) -> list[str]:
        """The services of docker-compose.yml this run starts: all but Grafana."""
        names = self.compose("config", "--services").split()
        return [name for name in names if name != NOT_STARTED]

    def config(self) -> dict[str, Any]:
        rendered: dict[str, Any] = json.loads(self.compose("config", "--format", "json"))
        return rendered

    def up(self, *services: str, **env: str) -> None:
        """Create or recreate ``services`` (all but Grafana when none is named; only those
        otherwise) from the images already built, and wait until they are healthy."""
        scope = ["--no-deps", *services] if services else self.services()
        self.compose(
            "up", "--detach", "--no-build", "--pull", "never", "--wait", "--wait-timeout",
            "180", *scope, env=env,
        )  # fmt: skip
        self.wait_ready()

    def containers(self) -> list[dict[str, Any]]:
        """``docker inspect`` of every container of the project, running or not."""
        ids = self.compose("ps", "--all", "--quiet").split()
        if not ids:
            return []
        docker = os.environ.get("DOCKER", "docker")
        out = subprocess.run(
            [docker, "inspect", *ids], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        inspected: list[dict[str, Any]] = json.loads(out)
        return inspected

    def container(self, service: str) -> dict[str, Any]:
        (found,) = [
            c
            for c in self.containers()
            if c["Config"]["Labels"].get("com.docker.compose.service") == service
        ]
        return found

    def log_file_lines(self) -> list[dict[str, Any]]:
        """The JSON lines in the service's log file, read through the volume by a
        volume-owners container (the service's own may be stopped)."""
        text = self.compose(
            "run", "--rm", "--no-deps", "-T", "volume-owners", "sh", "-c", f"cat {LOG_FILES}"
        )
        return [json.loads(raw) for raw in text.splitlines() if raw.startswith("{")]

    def lines_of(self, trace_id: str) -> list[dict[str, Any]]:
        """The file's lines of one request, once its last one ("Request completed", written
        just after the client has its last event) is there."""

        def complete() -> list[dict[str, Any]] | None:
            lines = [x for x in self.log_file_lines() if x.get("trace_id") == trace_id]
            done = any(x.get("message") == "Request completed" for x in lines)
            return lines if done else None

        found: list[dict[str, Any]] = poll(
            complete, timeout_s=30, every_s=0.2, what=f"the lines of {trace_id} in the file"
        )
        return found

    # --- the service -----------------------------------------------------------------------

    def stream(self, session_id: str | None = None, query: str = "Python, Kafka") -> Events:
        """One whole stream through the published port; its events."""
        response = self.http.post(
            f"{SERVICE}/api/fit-check/stream",
            json={"query": query, "session_id": session_id or f"compose-{uuid.uuid4().hex[:8]}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        events = parse_sse(response.text)
        assert events[0][0] == "session" and events[-1][0] == "complete", events[-1]
        return events

    def answers(self, url: str) -> bool:
        return self.http.get(url).status_code == 200

    def wait_ready(self) -> None:
        for what, url in (
            ("fit-check", f"{SERVICE}/health"),
            ("the collector", COLLECTOR_HEALTH),
            ("Jaeger", f"{JAEGER}/api/services"),
            ("Prometheus", f"{PROMETHEUS}/-/ready"),
            ("VictoriaLogs", f"{VICTORIALOGS}/health"),
        ):
            poll(partial(self.answers, url), timeout_s=120, what=what)

    # --- the back-ends ---------------------------------------------------------------------

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{JAEGER}/api/traces/{trace_id}")
        if response.status_code != 200:
            return []
        data = response.json().get("data") or []
        spans: list[dict[str, Any]] = data[0]["spans"] if data else []
        return spans

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = at
        body = self.http.get(f"{PROMETHEUS}/api/v1/query", params=params).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        result = self.query(promql, at)
        return float(result[0]["value"][1]) if result else None

    def exemplar_trace_ids(self, metric: str, since: float) -> set[str]:
        body = self.http.get(
            f"{PROMETHEUS}/api/v1/query_exemplars",
            params={"query": metric, "start": since, "end": time.time()},
        ).json()
        assert body["status"] == "success", body
        return {
            exemplar["labels"].get("trace_id", "")
            for series in body["data"]
            for exemplar in series["exemplars"]
        }

    def logsql(self, query: str) -> list[dict[str, Any]]:
        """Every record VictoriaLogs holds that matches the LogsQL ``query``."""
        response = self.http.post(f"{VICTORIALOGS}/select/logsql/query", data={"query": query})
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line]


@pytest.fixture(scope="session")
def stack() -> Iterator[ComposeStack]:
    script = os.environ.get("FIT_CHECK_E2E_COMPOSE")
    if not script:
        pytest.fail(
            "FIT_CHECK_E2E_COMPOSE is not set: `make e2e-compose` starts the stack and runs "
            "these tests with it"
        )
    stack = ComposeStack(Path(script))
    stack.wait_ready()
    try:
        yield stack
    finally:
        stack.http.close()
