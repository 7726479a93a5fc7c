"""Analyses through a real local model: llama-cpp-python's server, SmolLM2-135M-Instruct on
one thread, on loopback; the service with its default timeouts in front of it.

What a mock cannot show: the server's own stream (a role-only first chunk, a final chunk
with the finish reason and no text, no usage), its prompt cache across the calls of a
session, and what a server that dies mid-answer does to a stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import poll
from tests.e2e_llm.local_llm import (
    MODEL,
    Generation,
    LLMServer,
    Stream,
    analyse,
    llm_server,
    llm_spans,
    metric_value,
    service_for,
)
from tests.service_process import ServiceProcess

pytestmark = [pytest.mark.llm, pytest.mark.timeout(900), pytest.mark.usefixtures("built_server")]

#: Two sessions, one after the other: a company, then a job description.
QUERIES = (
    "Ledgerline Payments",
    "Senior Python engineer, FastAPI, Kafka, Kubernetes and AWS; observability a plus",
)
CALLS_PER_SESSION = 3  # skeptical_comparison, skills_matching, generate_results


@dataclass
class Run:
    server: LLMServer
    service: ServiceProcess
    streams: list[Stream]
    #: The server's generations while the streams ran, in order: three per session.
    generations: list[Generation]


@pytest.fixture(scope="module")
def run(built_server: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The sessions of ``QUERIES`` through one server and one service, once per module."""
    logs = tmp_path_factory.mktemp("llm")
    with (
        llm_server(logs / "llm-server.log") as server,
        service_for(server, logs / "service.log") as service,
    ):
        streams = [analyse(service, query) for query in QUERIES]
        yield Run(server, service, streams, server.generations())


def test_every_stream_ends_with_exactly_one_complete(run: Run) -> None:
    for stream in run.streams:
        assert stream.terminal == [stream.events[-1]], stream.events[-3:]
        name, data = stream.events[-1]
        assert name == "complete", data
        assert data["session_id"] == stream.session_id
        report = "".join(d["chunk"] for n, d in stream.events if n == "response")
        assert report.strip(), "the model wrote no report"


def test_llm_spans_carry_model_provider_and_finish_reason(run: Run) -> None:
    provider = f"127.0.0.1:{run.server.port}"  # an unknown host: named by host and port
    for stream in run.streams:
        chats = llm_spans(run.service, stream.trace_id, CALLS_PER_SESSION)
        assert len(chats) == CALLS_PER_SESSION
        for span in chats:
            attributes: dict[str, Any] = span["attributes"]
            assert span["status"]["status_code"] == "UNSET", span["status"]
            assert attributes["gen_ai.request.model"] == MODEL
            assert attributes["gen_ai.response.model"] == MODEL  # the server echoes it
            assert attributes["gen_ai.provider.name"] == provider
            # "stop" at the end of its answer, "length" at the call's max_tokens.
            assert attributes["gen_ai.response.finish_reasons"] in (["stop"], ["length"])


def test_a_server_that_reports_no_usage_is_said_so(run: Run) -> None:
    """llama-cpp-python's stream carries no ``usage``, even when ``stream_options`` asks
    for it: no token attributes (none measured is not zero), and a flag and a count say so."""
    for stream in run.streams:
        for span in llm_spans(run.service, stream.trace_id, CALLS_PER_SESSION):
            attributes = span["attributes"]
            assert attributes["fit_check.llm.usage_reported"] is False
            assert not [name for name in attributes if name.startswith("gen_ai.usage.")]
    calls = CALLS_PER_SESSION * len(run.streams)
    missing = metric_value(run.service, "fit_check_llm_usage_missing_total", f'model="{MODEL}"')
    assert missing == calls


def test_later_calls_of_a_session_read_the_shared_prefix_from_the_cache(run: Run) -> None:
    """The facts come first and the task last, so the second and third calls of a session
    find all but the task's tokens in the server's cache; the first call of the next session
    shares only the system prompt and the start of the facts with what came before."""
    sessions = len(run.streams)
    assert len(run.generations) == CALLS_PER_SESSION * sessions, run.generations
    for index in range(sessions):
        start = index * CALLS_PER_SESSION
        first, *later = run.generations[start : start + CALLS_PER_SESSION]
        for generation in later:
            assert generation.cached >= 0.8 * generation.prompt_tokens, generation
            assert generation.evaluated < 0.2 * generation.prompt_tokens, generation
        assert first.cached < 0.5 * first.prompt_tokens, first


def failed_last(chats: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The LLM spans once the last of them has ended in error."""
    return chats if chats[-1]["status"]["status_code"] == "ERROR" else None


def test_a_server_killed_mid_answer_ends_the_stream_with_llm_error(
    built_server: None, tmp_path: Path
) -> None:
    with (
        llm_server(tmp_path / "llm-server.log") as server,
        service_for(server, tmp_path / "service.log") as service,
    ):
        killed: list[str] = []

        def kill_mid_answer(name: str, data: dict[str, Any]) -> None:
            # ``progress``: an answer has been arriving for a second; ``response``: the
            # report is arriving. Either way the server is writing when it dies.
            if name in ("progress", "response") and not killed:
                server.kill()
                killed.append(name)

        stream = analyse(service, QUERIES[0], on_event=kill_mid_answer)
        assert killed, "the server was never caught writing"
        assert stream.terminal == [stream.events[-1]], stream.events[-3:]
        name, data = stream.events[-1]
        assert (name, data["code"]) == ("error", "LLM_ERROR"), data
        assert "llm provider failed" in data["message"], data
        # The call that was cut is the last of its trace, and failed (the others succeeded).
        *finished, cut = poll(
            lambda: failed_last(llm_spans(service, stream.trace_id, 1)),
            timeout_s=30,
            every_s=0.1,
            what="the failed LLM span",
        )
        assert [s["status"]["status_code"] for s in finished] == ["UNSET"] * len(finished)
        assert cut["attributes"]["error.type"] == "ProviderError"
        assert "gen_ai.response.finish_reasons" not in cut["attributes"]

        # The next analysis finds nobody listening: refused at once, and said the same way.
        after = analyse(service, QUERIES[0], timeout_s=60)
        assert after.seconds < 30
        assert [(n, d["code"]) for n, d in after.terminal] == [("error", "LLM_ERROR")]
        health = httpx.get(f"{service.url}/health", timeout=5)
        assert health.status_code == 200
