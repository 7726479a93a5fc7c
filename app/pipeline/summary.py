"""A phase's one-line summary, taken from a model's answer whatever shape the answer has.

Models answer in prose, in numbered or bulleted lists, in markdown with headings, and
sometimes open by repeating the request ("Here is the comparison:"). The summary is the
first sentence that says something: list markers, heading marks and emphasis are
stripped, lines that only introduce what follows are skipped.
"""

from __future__ import annotations

import re

MAX_SUMMARY_CHARS = 200

_MARKER = re.compile(r"^\s*(?:#{1,6}\s+|[-*+\u2022]\s+|\(?\d{1,3}[.)]\s+|[ivxIVX]{1,4}[.)]\s+)")
_EMPHASIS = re.compile(r"[*_`]{1,3}")
_SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z0-9\"'(])")
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "dr.", "vs.", "etc.", "inc.", "no."})


def summary_of(answer: str) -> str:
    """The first sentence of ``answer`` that says something, at most 200 characters."""
    lines = [_EMPHASIS.sub("", _MARKER.sub("", raw)).strip() for raw in answer.splitlines()]
    saying = [line for line in lines if _says_something(line)]
    # A heading or a one-word line ("Strengths") only when nothing else says anything.
    fuller = [line for line in saying if len(line.split()) >= 3]
    chosen = (fuller or saying or [""])[0]
    sentence = _first_sentence(chosen)
    if len(sentence) > MAX_SUMMARY_CHARS:
        return sentence[: MAX_SUMMARY_CHARS - 3].rstrip() + "..."
    return sentence


def _says_something(line: str) -> bool:
    return len(line) >= 3 and not line.endswith(":") and any(c.isalpha() for c in line)


def _first_sentence(line: str) -> str:
    for end in _SENTENCE_END.finditer(line):
        word = line[: end.start() + 1].rsplit(maxsplit=1)[-1]
        if "." in word[:-1] or word.lower() in _ABBREVIATIONS:
            continue  # "e.g.", "U.S.", "etc."
        return line[: end.start() + 1]
    return line
