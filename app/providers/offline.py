"""The embedded default providers: real work on bundled sample data, no key, no network."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from importlib import resources

from app.providers.base import LLMRequest, LLMUsage, SearchResult

_WORD = re.compile(r"[a-z0-9][a-z0-9.+#/-]*")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "our",
        "the",
        "to",
        "we",
        "with",
        "you",
        "your",
        "who",
        "what",
        "will",
        "this",
        "that",
        "engineer",
        "engineers",
        "senior",
        "junior",
        "role",
        "team",
        "company",
    ]
)


def _tokens(text: str) -> list[str]:
    return [t for t in _WORD.findall(text.lower()) if t not in _STOPWORDS]


class OfflineSearch:
    """Ranks the bundled sample corpus of fictional companies and job profiles by term overlap."""

    name = "offline"

    def __init__(self) -> None:
        raw = resources.files("app.providers").joinpath("data/sample_corpus.json").read_text()
        self._documents = [
            SearchResult(
                title=doc["title"],
                url=doc["url"],
                snippet=doc["snippet"],
                skills=tuple(s.lower() for s in doc.get("skills", ())),
            )
            for doc in json.loads(raw)["documents"]
        ]
        self._index = [
            (doc, set(_tokens(f"{doc.title} {doc.snippet}")), set(doc.skills))
            for doc in self._documents
        ]

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        """Score = shared words + 2x per named skill; ties keep corpus order (deterministic)."""
        words = set(_tokens(query))
        lowered = query.lower()
        scored = []
        for position, (doc, doc_words, doc_skills) in enumerate(self._index):
            skill_hits = sum(1 for skill in doc_skills if skill in lowered)
            score = len(words & doc_words) + 2 * skill_hits
            if score > 0:
                scored.append((-score, position, doc))
        scored.sort()
        return [doc for _, _, doc in scored[:limit]]

    async def aclose(self) -> None:
        return None


class OfflineAnalyzer:
    """Writes each phase's prose from the analysis the pipeline computed; same input, same text."""

    name = "offline"
    model = "offline-analyzer"

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncGenerator[str, None]:
        text = _WRITERS.get(request.task, _write_generic)(request.context)
        usage.response_model = self.model
        usage.input_tokens = sum(len(m.content.split()) for m in request.messages)
        words = text.split(" ")
        usage.output_tokens = len(words)
        for index in range(0, len(words), 6):
            chunk = " ".join(words[index : index + 6])
            yield chunk if index + 6 >= len(words) else chunk + " "
        usage.finish_reason = "stop"

    async def aclose(self) -> None:
        return None


def _matches(context: dict[str, object]) -> list[dict[str, object]]:
    matches = context.get("matches")
    if not isinstance(matches, list):
        return []
    return [match for match in matches if isinstance(match, dict)]


def _write_comparison(context: dict[str, object]) -> str:
    matches = _matches(context)
    gaps = [m["skill"] for m in matches if m["verdict"] == "gap"]
    strong = [m["skill"] for m in matches if m["verdict"] == "strong"]
    sources = context.get("sources", 0)
    lines = [
        f"Compared {len(matches)} requirements drawn from the query and {sources} sources "
        f"against {context.get('engineer', 'the engineer')}'s record.",
        f"Clear evidence for: {', '.join(map(str, strong)) or 'none of them'}.",
        f"Skeptical view: no evidence for {', '.join(map(str, gaps))}."
        if gaps
        else "Skeptical view: every requirement has some evidence; depth is the open question.",
    ]
    return " ".join(lines)


def _write_matching(context: dict[str, object]) -> str:
    parts = [
        f"{m['skill']}: {m['verdict']} (level {m['level']}/5, score {m['score']})"
        for m in _matches(context)
    ]
    return "; ".join(parts) + "." if parts else "No specific skills were named."


def _write_report(context: dict[str, object]) -> str:
    matches = _matches(context)
    score = context.get("score", 0)
    label = context.get("label", "")
    lines = [
        f'## Fit report: {context.get("engineer", "the engineer")} for "{context.get("query")}"',
        "",
        f"**Overall: {score}/100, {label}.**",
        "",
    ]
    for verdict, heading in (("strong", "Strengths"), ("partial", "Partial"), ("gap", "Gaps")):
        group = [m for m in matches if m["verdict"] == verdict]
        if group:
            lines.append(f"### {heading}")
            lines.extend(f"- **{m['skill']}**: {m['evidence']}" for m in group)
            lines.append("")
    if not matches:
        lines.append("The query names no skills this analysis recognises; add a job description.")
    lines.append("_Generated offline from sample data by offline-analyzer._")
    return "\n".join(lines)


def _write_generic(context: dict[str, object]) -> str:
    return "No analysis for this task."


_WRITERS = {
    "skeptical_comparison": _write_comparison,
    "skills_matching": _write_matching,
    "generate_results": _write_report,
}
