"""What the image build sends and fetches, with either Docker builder."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def sent_to_the_builder(name: str) -> bool:
    """Whether a top-level entry goes into the build context, by the root .dockerignore
    (the last pattern that matches decides; ``!`` takes an entry back)."""
    sent = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        exception = pattern.startswith("!")
        if fnmatch(name, pattern.removeprefix("!").rstrip("/")):
            sent = exception
    return sent


def test_the_context_is_the_four_entries_the_image_needs() -> None:
    """The classic builder reads only the context root's .dockerignore: there must be one,
    or .git, .venv and everything else go to the daemon."""
    entries = {path.name for path in REPO.iterdir()}
    assert {".git", ".venv", "tests", "bench", "docs"} <= entries | {".git", ".venv"}
    sent = {name for name in entries | {".git", ".venv"} if sent_to_the_builder(name)}
    assert sent == {"pyproject.toml", "README.md", "app", "otel"}


def test_no_dockerfile_makes_buildkit_fetch_a_frontend() -> None:
    for dockerfile in REPO.glob("deploy/**/Dockerfile"):
        first = dockerfile.read_text().splitlines()[0]
        assert not first.lower().startswith("# syntax="), dockerfile
