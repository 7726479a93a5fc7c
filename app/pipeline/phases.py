"""The five-phase fit-check pipeline: research, compare, match, report.

It only computes and emits events; how they reach the client, and what happens on
timeouts or disconnects, is the session's business (``app.pipeline.session``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.pipeline.analysis import (
    Profile,
    SkillVocabulary,
    extract_requirements,
    fit_label,
    match_skills,
    overall_score,
)
from app.pipeline.events import (
    Event,
    Phase,
    PhaseCompleteEvent,
    PhaseEvent,
    ProgressEvent,
    ResponseEvent,
    ThoughtEvent,
    ThoughtKind,
    clip_text,
    split_text,
)
from app.pipeline.gateway import Answer, ProviderGateway
from app.pipeline.summary import summary_of
from app.providers.base import LLMRequest, Message
from otel.facade import Telemetry


class EventSink(Protocol):
    """Where the pipeline's events go (the session), and how it holds the pipeline back."""

    def __call__(self, event: Event) -> None: ...

    @property
    def congested(self) -> bool:
        """More events wait for the reader than the session will hold: stop producing."""
        ...

    async def wait_for_room(self) -> None: ...

    async def wait_for_reader(self) -> None:
        """Before work that costs money: returns once somebody reads the session."""
        ...


SYSTEM_PROMPT = (
    "You assess whether a software engineer fits an employer. Be specific and skeptical: "
    "claim only what the evidence supports. Use the JSON facts you are given."
)
_JOB_WORDS = {"engineer", "developer", "experience", "requirements", "role", "years", "team"}


@dataclass(slots=True)
class PhaseResult:
    summary: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class PhaseEmitter:
    """Emits the events of one run; drops thoughts when the client did not ask for them."""

    def __init__(self, emit: EventSink, include_thoughts: bool, telemetry: Telemetry) -> None:
        self.emit = emit
        self._include_thoughts = include_thoughts
        self._telemetry = telemetry
        self._step = 0

    def thought(
        self, kind: ThoughtKind, content: str, *, tool: str | None = None, input: str | None = None
    ) -> None:
        if not self._include_thoughts:
            return
        self._step += 1
        thought = ThoughtEvent(step=self._step, type=kind, content=clip_text(content))
        if tool is not None:
            thought["tool"] = tool
        if input is not None:
            thought["input"] = input
        self.emit(Event("thought", thought))

    @contextmanager
    def phase(self, phase: Phase, message: str) -> Iterator[PhaseResult]:
        with self._telemetry.phase(phase) as scope:
            self.emit(Event("phase", PhaseEvent(phase=phase, message=message)))
            result = PhaseResult()
            yield result
            self.emit(
                Event(
                    "phase_complete",
                    PhaseCompleteEvent(
                        phase=phase,
                        summary=result.summary,
                        data=result.data,
                        duration_ms=scope.elapsed_ms(),
                    ),
                )
            )


class FitCheckPipeline:
    """Runs the phases in order; provider failures surface as PipelineError."""

    def __init__(
        self,
        *,
        gateway: ProviderGateway,
        profile: Profile,
        telemetry: Telemetry,
        search_queries: int = 3,
        results_per_query: int = 5,
    ) -> None:
        self._gateway = gateway
        self._profile = profile
        self._vocabulary = SkillVocabulary.for_profile(profile)
        self._telemetry = telemetry
        self._search_queries = search_queries
        self._results_per_query = results_per_query

    async def run(self, query: str, emit: EventSink, *, include_thoughts: bool = True) -> None:
        emitter = PhaseEmitter(emit, include_thoughts, self._telemetry)
        profile = self._profile

        with emitter.phase("connecting", "Reading the query") as result:
            kind = self._query_kind(query)
            emitter.thought("reasoning", f"The query reads as a {kind.replace('_', ' ')}.")
            result.summary = f"Evaluating {profile.name} against a {kind.replace('_', ' ')}"
            result.data = {"query_kind": kind, "engineer": profile.name}

        await emit.wait_for_reader()
        with emitter.phase("deep_research", "Researching the employer") as result:
            queries = self._research_queries(query)
            for q in queries:
                emitter.thought("tool_call", "Searching", tool="search", input=q)
            research = await self._gateway.search(queries, limit=self._results_per_query)
            requirements = extract_requirements(query, research, self._vocabulary)
            emitter.thought(
                "observation", f"{len(research)} sources, {len(requirements)} requirements found."
            )
            result.summary = f"{len(research)} sources, {len(requirements)} requirements"
            result.data = {
                "sources": [{"title": r.title, "url": r.url} for r in research],
                "requirements": [{"skill": r.skill, "source": r.source} for r in requirements],
            }

        matches = match_skills(requirements, profile)
        facts = {
            "query": query,
            "engineer": profile.name,
            "sources": len(research),
            "matches": [m.as_dict() for m in matches],
        }

        await emit.wait_for_reader()
        with emitter.phase("skeptical_comparison", "Comparing skeptically") as result:
            answer = await self._gateway.complete(
                self._request("skeptical_comparison", facts),
                on_chunk=_progress(emit, "skeptical_comparison"),
            )
            text = answer.text
            emitter.thought("reasoning", text)
            gaps = [m.skill for m in matches if m.verdict == "gap"]
            result.summary = summary_of(text)
            result.data = {
                "strong": sum(m.verdict == "strong" for m in matches),
                "partial": sum(m.verdict == "partial" for m in matches),
                "gaps": gaps,
            }

        score = overall_score(matches)
        facts.update(score=score, label=fit_label(score))

        await emit.wait_for_reader()
        with emitter.phase("skills_matching", "Matching skills") as result:
            text = (
                await self._gateway.complete(
                    self._request("skills_matching", facts),
                    on_chunk=_progress(emit, "skills_matching"),
                )
            ).text
            emitter.thought("reasoning", text)
            result.summary = f"Fit score {score}/100 over {len(matches)} skills"
            result.data = {"score": score, "matches": facts["matches"]}

        await emit.wait_for_reader()
        with emitter.phase("generate_results", "Writing the report") as result:

            def on_chunk(chunk: str) -> None:
                for piece in split_text(chunk):
                    emit(Event("response", ResponseEvent(chunk=piece)))

            report = await self._gateway.complete(
                self._request("generate_results", facts, max_tokens=1200),
                on_chunk=on_chunk,
                flow=emit,
            )
            if report.truncated:
                on_chunk(_cut_note(report))
            result.summary = f"{fit_label(score).capitalize()} ({score}/100)"
            result.data = {
                "score": score,
                "label": fit_label(score),
                "characters": len(report.text),
                "truncated": report.truncated,
            }

    @staticmethod
    def _query_kind(query: str) -> str:
        words = re.findall(r"[a-z]+", query.lower())
        if len(words) > 6 or _JOB_WORDS & set(words):
            return "job_description"
        return "company"

    def _research_queries(self, query: str) -> list[str]:
        base = query if len(query) <= 200 else query[:200]
        candidates = [
            base,
            f"{base} engineering tech stack",
            f"{base} hiring requirements",
            f"{base} engineering culture",
            f"{base} team",
        ]
        return candidates[: self._search_queries]

    def _request(self, task: str, facts: dict[str, Any], max_tokens: int = 800) -> LLMRequest:
        prompts = {
            "skeptical_comparison": "Compare the requirements with the engineer's evidence. "
            "Name the gaps first.",
            "skills_matching": "Assess each matched skill in one line.",
            "generate_results": "Write a short markdown fit report with strengths and gaps.",
        }
        # The facts first, the task last: a session's calls then share their longest
        # prefix (system prompt and facts; later calls only add keys at the end), which a
        # provider's prompt cache reads once (a local model re-reads whatever differs).
        user = f"Facts:\n{json.dumps(facts, ensure_ascii=False)}\n\nTask: {prompts[task]}"
        return LLMRequest(
            task=task,
            context=facts,
            max_tokens=max_tokens,
            messages=(Message("system", SYSTEM_PROMPT), Message("user", user)),
        )


#: How often a phase waiting on a long LLM answer says it is still going.
PROGRESS_EVERY_S = 1.0


def _progress(emit: EventSink, phase: Phase) -> Callable[[str], None]:
    """``on_chunk`` for a phase whose answer is shown only at its end: a ``progress`` event
    at most every ``PROGRESS_EVERY_S``, so a user sees a long call is alive."""
    clock = time.monotonic
    next_at = clock() + PROGRESS_EVERY_S
    received = 0

    def on_chunk(chunk: str) -> None:
        nonlocal next_at, received
        received += len(chunk)
        now = clock()
        if now >= next_at:
            next_at = now + PROGRESS_EVERY_S
            emit(Event("progress", ProgressEvent(phase=phase, characters=received)))

    return on_chunk


def _cut_note(answer: Answer) -> str:
    return f"\n\n*(The report was cut at {len(answer.text)} characters: the model wrote more.)*\n"
