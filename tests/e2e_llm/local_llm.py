"""A real local model on loopback, and fit-check in front of it: what the ``llm`` tests
and ``python -m tests.e2e_llm.measure`` share.

The server is llama-cpp-python's (``deploy/local/llm-server.sh run``, built and cached by
``deploy/local/llm-server.sh build``) with SmolLM2-135M-Instruct on one thread. It reports
no token usage in a stream, so what it read from its prompt cache is read from its own log:
one ``prefix-match hit`` line, then llama.cpp's timings, per generation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.stack import poll
from tests.helpers import Events, parse_sse
from tests.service_process import ServiceProcess, free_port, service_process

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "llm-server.sh"
#: The name the service asks for and the server echoes (llm-server.sh's MODEL_ALIAS).
MODEL = "SmolLM2-135M-Instruct"
TERMINAL = frozenset({"complete", "error"})

_PREFIX_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens")
_FULL_HIT = "Llama.generate: full prompt already cached"
_PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
_EVAL = re.compile(r"^\S*\s+eval time =\s*([\d.]+) ms /\s*(\d+) runs")
_TOTAL = re.compile(r"total time =\s*([\d.]+) ms")


def server_built() -> bool:
    """Whether ``llm-server.sh build`` has completed for the pinned versions."""
    return subprocess.run([str(SCRIPT), "check"], check=False, timeout=60).returncode == 0


@dataclass(frozen=True)
class Generation:
    """One generation as the server's log tells it: prompt tokens taken from the cache
    (``cached``) and read anew (``evaluated``), and llama.cpp's own timings."""

    cached: int
    evaluated: int
    prompt_eval_ms: float
    generated: int
    eval_ms: float
    total_ms: float

    @property
    def prompt_tokens(self) -> int:
        return self.cached + self.evaluated


def generations(log: str) -> list[Generation]:
    """The generations of a llama-cpp-python server log (``--verbose True``), in order.

    Each ends with llama.cpp's ``total time`` line. The ``prefix-match hit`` line before it
    says how many prompt tokens were reused; with no such line none were (the context was
    reset). llama.cpp's counters are reset per generation.
    """
    found: list[Generation] = []
    cached = evaluated = generated = 0
    hit: tuple[int, int] | None = None
    prompt_ms = eval_ms = 0.0
    for line in log.splitlines():
        if match := _PREFIX_HIT.search(line):
            hit = (int(match[1]), int(match[2]))
        elif _FULL_HIT in line:
            hit = (-1, 0)
        elif match := _PROMPT_EVAL.search(line):
            prompt_ms, evaluated = float(match[1]), int(match[2])
        elif match := _EVAL.search(line.split(":", 1)[-1]):
            eval_ms, generated = float(match[1]), int(match[2])
        elif match := _TOTAL.search(line):
            if hit is None:
                cached = 0
            elif hit[0] < 0:  # the whole prompt was cached
                cached = evaluated
                evaluated = 0
            else:
                cached = hit[0]
            found.append(
                Generation(
                    cached=cached,
                    evaluated=evaluated,
                    prompt_eval_ms=prompt_ms,
                    generated=generated,
                    eval_ms=eval_ms,
                    total_ms=float(match[1]),
                )
            )
            hit, evaluated, generated, prompt_ms, eval_ms = None, 0, 0, 0.0, 0.0
    return found


@dataclass
class LLMServer:
    """llama-cpp-python's server, started by ``llm-server.sh run`` (which execs it: the
    process is the server itself)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def generations(self) -> list[Generation]:
        return generations(self.log())

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a crash ends it: no reply finishes."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@contextmanager
def llm_server(log_path: Path, *, threads: int = 1, **env: str) -> Iterator[LLMServer]:
    """The local model on a free loopback port, ready to answer; stopped at the end."""
    port = free_port()
    environment = {
        **os.environ,
        "LLM_SERVER_PORT": str(port),
        "LLM_SERVER_THREADS": str(threads),
        "LLM_SERVER_VERBOSE": "True",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(SCRIPT), "run"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LLMServer(process=process, port=port, log_path=log_path)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the LLM server exited:\n{server.log()[-4000:]}")
            return httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200

        poll(ready, timeout_s=120, every_s=0.2, what="the LLM server answering /v1/models")
        yield server
    finally:
        server.stop()


@contextmanager
def service_for(server: LLMServer, log_path: Path, **env: str) -> Iterator[ServiceProcess]:
    """``fit-check serve`` with the ``openai`` provider pointed at ``server``, default
    timeouts, and every span printed as a JSON line on its stdout (the console exporter)."""
    environment = {
        "FIT_CHECK_LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "",  # none: a key from the environment is not for this server
        "FIT_CHECK_LLM_MODEL": MODEL,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **env,
    }
    with service_process(log_path, open_files=None, args=(), **environment) as service:
        yield service


@dataclass
class Stream:
    session_id: str
    events: Events
    seconds: float

    @property
    def trace_id(self) -> str:
        return str(self.events[0][1]["trace_id"])

    @property
    def terminal(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, data) for name, data in self.events if name in TERMINAL]


def analyse(
    service: ServiceProcess,
    query: str,
    *,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    timeout_s: float = 300,
) -> Stream:
    """One analysis, its events read as they come (``on_event`` sees each)."""
    session_id = f"llm-{uuid.uuid4().hex[:12]}"
    events: Events = []
    started = time.perf_counter()
    with httpx.stream(
        "POST",
        f"{service.url}/api/fit-check/stream",
        json={"query": query, "session_id": session_id},
        timeout=httpx.Timeout(timeout_s, connect=5),
    ) as response:
        assert response.status_code == 200, response.read()
        block: list[str] = []
        for line in response.iter_lines():
            # Each read has its own timeout; the stream as a whole has this one (the
            # service's pings would otherwise keep a stuck stream alive).
            if time.perf_counter() - started > timeout_s:
                raise AssertionError(f"stream not over in {timeout_s}s: {events[-3:]}")
            if line:
                block.append(line)
                continue
            for name, data in parse_sse("\n".join(block)):
                events.append((name, data))
                if on_event is not None:
                    on_event(name, data)
            block = []
    return Stream(session_id=session_id, events=events, seconds=time.perf_counter() - started)


def spans(service: ServiceProcess, trace_id: str) -> list[dict[str, Any]]:
    """The spans of ``trace_id`` the console exporter printed (JSON lines with a
    ``context``, beside the log lines)."""
    wanted = f"0x{trace_id}"
    found = []
    for raw in service.log().splitlines():
        if not raw.startswith("{"):
            continue
        try:
            line = json.loads(raw)
        except ValueError:  # the last line, half written
            continue
        context = line.get("context")
        if isinstance(context, dict) and context.get("trace_id") == wanted:
            found.append(line)
    return found


def llm_spans(service: ServiceProcess, trace_id: str, calls: int) -> list[dict[str, Any]]:
    """The trace's ``chat`` spans, in the order they started, once ``calls`` are out."""

    def exported() -> list[dict[str, Any]] | None:
        chats = [s for s in spans(service, trace_id) if s["name"] == f"chat {MODEL}"]
        return chats if len(chats) >= calls else None

    found: list[dict[str, Any]] = poll(
        exported, timeout_s=30, every_s=0.1, what=f"{calls} LLM spans of {trace_id}"
    )
    return sorted(found, key=lambda span: str(span["start_time"]))


def metric_value(service: ServiceProcess, name: str, labels: str) -> float | None:
    """One sample of ``/metrics`` (Prometheus text), by name and exact label text."""
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return None
