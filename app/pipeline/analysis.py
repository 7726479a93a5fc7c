"""Deterministic fit analysis: requirements out of text, matched against the engineer's profile.

The pipeline grounds every LLM with these numbers, so the scores are the same whichever
provider writes the prose, and the offline provider can write a real report from them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from app.providers.base import SearchResult

Verdict = Literal["strong", "partial", "gap"]


@dataclass(frozen=True, slots=True)
class Skill:
    name: str
    level: int
    years: int
    evidence: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    headline: str
    summary: str
    years_experience: int
    skills: dict[str, Skill]

    def terms(self) -> dict[str, str]:
        """Every spelling the profile knows, mapped to its canonical skill name."""
        mapping = {name: name for name in self.skills}
        for skill in self.skills.values():
            mapping.update({alias: skill.name for alias in skill.aliases})
        return mapping


@dataclass(frozen=True, slots=True)
class Requirement:
    skill: str
    weight: float
    source: Literal["query", "research"]


@dataclass(frozen=True, slots=True)
class SkillMatch:
    skill: str
    weight: float
    level: int
    score: float
    verdict: Verdict
    evidence: str

    def as_dict(self) -> dict[str, object]:
        return {
            "skill": self.skill,
            "weight": round(self.weight, 2),
            "level": self.level,
            "score": round(self.score, 2),
            "verdict": self.verdict,
            "evidence": self.evidence,
        }


#: Skills employers ask for that the bundled profile may lack; gaps must be found too.
COMMON_SKILLS: tuple[str, ...] = (
    "python",
    "fastapi",
    "django",
    "flask",
    "asyncio",
    "go",
    "rust",
    "java",
    "kotlin",
    "typescript",
    "javascript",
    "react",
    "node.js",
    "postgresql",
    "mysql",
    "redis",
    "kafka",
    "rabbitmq",
    "kubernetes",
    "docker",
    "terraform",
    "aws",
    "gcp",
    "azure",
    "opentelemetry",
    "prometheus",
    "grafana",
    "observability",
    "machine learning",
    "llm",
    "pytorch",
    "data engineering",
    "spark",
    "airflow",
    "graphql",
    "grpc",
    "microservices",
    "ci/cd",
    "security",
    "linux",
    "sre",
    "distributed systems",
    "elasticsearch",
    "mongodb",
)
_COMMON_ALIASES = {
    "k8s": "kubernetes",
    "postgres": "postgresql",
    "golang": "go",
    "otel": "opentelemetry",
    "ml": "machine learning",
    "nodejs": "node.js",
    "js": "javascript",
    "ts": "typescript",
}


def load_profile(path: Path | None = None) -> Profile:
    """Load the engineer's profile: the bundled sample, or the file FIT_CHECK_PROFILE names."""
    if path is None:
        raw = resources.files("app.providers").joinpath("data/engineer_profile.json").read_text()
    else:
        raw = path.read_text(encoding="utf-8")
    data = json.loads(raw)
    skills = {
        s["name"].lower(): Skill(
            name=s["name"].lower(),
            level=int(s["level"]),
            years=int(s.get("years", 0)),
            evidence=str(s.get("evidence", "")),
            aliases=tuple(a.lower() for a in s.get("aliases", ())),
        )
        for s in data["skills"]
    }
    return Profile(
        name=data["name"],
        headline=data.get("headline", ""),
        summary=data.get("summary", ""),
        years_experience=int(data.get("years_experience", 0)),
        skills=skills,
    )


class SkillVocabulary:
    """Finds known skills in free text, honouring aliases and multi-word names."""

    def __init__(self, terms: dict[str, str]) -> None:
        self._terms = terms
        alternatives = sorted(terms, key=len, reverse=True)
        body = "|".join(re.escape(term) for term in alternatives)
        # Skill names contain '.', '/', '+' and '#', so \b is not enough on their edges.
        self._pattern = re.compile(rf"(?<![\w.+#/-])(?:{body})(?![\w+#/-]|\.\w)")

    @classmethod
    def for_profile(cls, profile: Profile) -> SkillVocabulary:
        terms = {skill: skill for skill in COMMON_SKILLS}
        terms.update(_COMMON_ALIASES)
        terms.update(profile.terms())
        return cls(terms)

    def find(self, text: str) -> list[str]:
        """Canonical skill names in order of first appearance, each once."""
        seen: dict[str, None] = {}
        for match in self._pattern.finditer(text.lower()):
            seen.setdefault(self._terms[match.group(0)], None)
        return list(seen)


def extract_requirements(
    query: str,
    research: Iterable[SearchResult],
    vocabulary: SkillVocabulary,
    *,
    limit: int = 10,
) -> list[Requirement]:
    """What the employer needs: skills named in the query first, then the research's commonest."""
    from_query = vocabulary.find(query)
    requirements = [Requirement(skill, 1.0, "query") for skill in from_query]
    counts: Counter[str] = Counter()
    for result in research:
        found = set(result.skills) | set(vocabulary.find(f"{result.title} {result.snippet}"))
        counts.update(skill for skill in found if skill not in from_query)
    # Ties broken by name: most_common() would keep insertion order, which came from a set
    # and so from the hash seed (the same query scored 82 or 86 from one process to another).
    for skill, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(requirements) >= limit:
            break
        requirements.append(Requirement(skill, 0.5, "research"))
    return requirements[:limit]


def match_skills(requirements: Iterable[Requirement], profile: Profile) -> list[SkillMatch]:
    """Score each requirement 0..1 by the engineer's level (1-5) and years with it."""
    matches = []
    for req in requirements:
        skill = profile.skills.get(req.skill)
        if skill is None:
            matches.append(SkillMatch(req.skill, req.weight, 0, 0.0, "gap", "No evidence."))
            continue
        score = min(1.0, skill.level / 5 * 0.8 + min(skill.years, 5) / 5 * 0.2)
        verdict: Verdict = "strong" if score >= 0.7 else "partial" if score >= 0.4 else "gap"
        matches.append(
            SkillMatch(req.skill, req.weight, skill.level, score, verdict, skill.evidence)
        )
    return matches


def overall_score(matches: Iterable[SkillMatch]) -> int:
    """Weighted mean of the per-skill scores, as a 0-100 fit score (0 with no requirements)."""
    pairs = [(m.weight, m.score) for m in matches]
    total = sum(weight for weight, _ in pairs)
    if total == 0:
        return 0
    return round(100 * sum(weight * score for weight, score in pairs) / total)


def fit_label(score: int) -> str:
    if score >= 75:
        return "strong fit"
    if score >= 50:
        return "partial fit"
    return "weak fit"
