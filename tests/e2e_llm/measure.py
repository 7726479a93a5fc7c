"""Prefix caching with a real local model, measured (docs/performance.md, "Prefix caching
with a real local model").

    .venv/bin/python -m tests.e2e_llm.measure [--rounds 2] [--ab-max-tokens 16]

Needs ``deploy/local/llm-server.sh build`` (``make e2e-llm`` runs it). Two parts, against
one llama-cpp-python server (SmolLM2-135M-Instruct, one thread) on loopback:

1. **Through the service**: an analysis per query, one after the other; for each of its three
   LLM calls, the span's duration and what the server's log says it read from its prompt
   cache (``prefix-match hit``) and evaluated anew. The prompts are recorded too
   (``FIT_CHECK_CAPTURE_CONTENT=true``), for part 2.
2. **Layouts side by side, straight to the server**: those same prompts as the service lays
   them out (the facts first, the task last), and with the task moved first (the layout
   before issue 28), alternated, ``--rounds`` times. Each call is streamed with a few
   tokens of answer (``--ab-max-tokens``): the time to its first chunk is the time the
   server took to read the prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.e2e_llm.local_llm import (
    MODEL,
    SCRIPT,
    LLMServer,
    analyse,
    llm_server,
    llm_spans,
    service_for,
)

QUERIES = (
    "Ledgerline Payments",
    "Senior Python engineer, FastAPI, Kafka, Kubernetes and AWS; observability a plus",
    "Staff platform engineer: Go, Terraform, GCP, Prometheus and Grafana, on-call",
)
TASKS = ("skeptical_comparison", "skills_matching", "generate_results")


@dataclass
class Call:
    """One LLM call: where it sat in its session, and what it cost."""

    layout: str
    query: int
    position: int  # 1, 2, 3: the call's place in its session
    seconds: float  # the whole call (span, or request to last byte)
    first_chunk_s: float | None  # request to first text (direct calls only)
    prompt_tokens: int
    cached: int
    evaluated: int
    generated: int


def _ns(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _task_first(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The layout before: ``Task: ...`` first, then the facts."""
    system, user = messages
    facts, task = user["content"].rsplit("\n\nTask: ", 1)
    return [system, {"role": "user", "content": f"Task: {task}\n\n{facts}"}]


def through_service(server: LLMServer, logs: Path) -> tuple[list[Call], list[Any]]:
    """Part 1: an analysis per query; its calls and their prompts (as chat messages)."""
    calls: list[Call] = []
    prompts: list[Any] = []
    with service_for(server, logs / "service.log", FIT_CHECK_CAPTURE_CONTENT="true") as service:
        for index, query in enumerate(QUERIES):
            before = len(server.generations())
            stream = analyse(service, query)
            name, data = stream.events[-1]
            assert name == "complete", data
            spans = llm_spans(service, stream.trace_id, len(TASKS))
            generations = server.generations()[before:]
            assert len(generations) == len(TASKS), generations
            session = []
            for position, (span, generation) in enumerate(zip(spans, generations, strict=True)):
                messages = json.loads(span["attributes"]["gen_ai.input.messages"])
                session.append(
                    [{"role": m["role"], "content": m["parts"][0]["content"]} for m in messages]
                )
                calls.append(
                    Call(
                        layout="service",
                        query=index,
                        position=position + 1,
                        seconds=_ns(span["end_time"]) - _ns(span["start_time"]),
                        first_chunk_s=None,
                        prompt_tokens=generation.prompt_tokens,
                        cached=generation.cached,
                        evaluated=generation.evaluated,
                        generated=generation.generated,
                    )
                )
            prompts.append(session)
    return calls, prompts


def direct(
    server: LLMServer, messages: list[dict[str, str]], max_tokens: int
) -> tuple[float, float]:
    """One streamed call straight to the server: (seconds to first text, seconds in all)."""
    started = time.perf_counter()
    first: float | None = None
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "stream": True}
    with httpx.stream(
        "POST", f"{server.base_url}/chat/completions", json=body, timeout=120
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data:") and '"content"' in line:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def side_by_side(server: LLMServer, prompts: list[Any], rounds: int, max_tokens: int) -> list[Call]:
    """Part 2: each session's prompts in both layouts, alternating which goes first."""
    calls: list[Call] = []
    for round_ in range(rounds):
        for index, session in enumerate(prompts):
            layouts = ["facts first", "task first"]
            if (round_ + index) % 2:
                layouts.reverse()
            for layout in layouts:
                for position, messages in enumerate(session):
                    sent = messages if layout == "facts first" else _task_first(messages)
                    before = len(server.generations())
                    first, total = direct(server, sent, max_tokens)
                    (generation,) = server.generations()[before:]
                    calls.append(
                        Call(
                            layout=layout,
                            query=index,
                            position=position + 1,
                            seconds=total,
                            first_chunk_s=first,
                            prompt_tokens=generation.prompt_tokens,
                            cached=generation.cached,
                            evaluated=generation.evaluated,
                            generated=generation.generated,
                        )
                    )
    return calls


def table(calls: list[Call]) -> list[str]:
    """A markdown row per layout and call position: medians, and the range of times."""
    rows = [
        "| layout | call | calls | prompt tokens | from cache | evaluated | first chunk, s "
        "(median, min-max) | whole call, s (median, min-max) | tokens generated (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for layout in ("service", "facts first", "task first"):
        for position in (1, 2, 3):
            group = [c for c in calls if c.layout == layout and c.position == position]
            if not group:
                continue

            def spread(values: list[float]) -> str:
                return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

            firsts = [c.first_chunk_s for c in group if c.first_chunk_s is not None]
            rows.append(
                f"| {layout} | {position} | {len(group)} "
                f"| {statistics.median(c.prompt_tokens for c in group):.0f} "
                f"| {statistics.median(c.cached for c in group):.0f} "
                f"| {statistics.median(c.evaluated for c in group):.0f} "
                f"| {spread(firsts) if firsts else '-'} "
                f"| {spread([c.seconds for c in group])} "
                f"| {statistics.median(c.generated for c in group):.0f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the layout A/B")
    parser.add_argument("--ab-max-tokens", type=int, default=16, help="answer tokens per A/B call")
    parser.add_argument("--json", type=Path, help="also write every call here")
    args = parser.parse_args()
    paths = subprocess.run(
        [str(SCRIPT), "paths"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    version = paths.split("version=")[-1].strip()
    print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; server: {version}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fit-check-llm-") as tmp:
        logs = Path(tmp)
        with llm_server(logs / "llm-server.log") as server:
            started = time.perf_counter()
            service_calls, prompts = through_service(server, logs)
            print(f"through the service: {time.perf_counter() - started:.1f} s", flush=True)
            started = time.perf_counter()
            ab_calls = side_by_side(server, prompts, args.rounds, args.ab_max_tokens)
            print(f"layouts side by side: {time.perf_counter() - started:.1f} s", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    calls = service_calls + ab_calls
    print("\n".join(table(calls)))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(c) for c in calls], indent=1))


if __name__ == "__main__":
    main()
