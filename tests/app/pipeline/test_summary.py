"""Phase summaries from the shapes real models answer in."""

from __future__ import annotations

import pytest

from app.pipeline.summary import summary_of


@pytest.mark.parametrize(
    ("answer", "summary"),
    [
        ("The engineer fits well. Kafka is a gap.", "The engineer fits well."),
        (
            "1. Kafka is missing from the evidence.\n2. Python is strong.",
            "Kafka is missing from the evidence.",
        ),
        ("- **Kafka**: no evidence. More below.\n- Python: strong.", "Kafka: no evidence."),
        ("I. Strengths\nThe engineer ships Python daily.", "The engineer ships Python daily."),
        (
            "Here is the comparison of the requirements:\n\n1. Go is a gap.",
            "Go is a gap.",
        ),
        (
            "## Comparison\n\nStrong on Python, e.g. FastAPI. Weak on Go.",
            "Strong on Python, e.g. FastAPI.",
        ),
        ("Strengths", "Strengths"),
        ("\n\n1\n\nKafka is a gap.", "Kafka is a gap."),
        ("Version 3.11 of Python is used. Then more.", "Version 3.11 of Python is used."),
        ("", ""),
    ],
)
def test_the_summary_is_the_first_sentence_that_says_something(answer: str, summary: str) -> None:
    assert summary_of(answer) == summary


def test_a_long_first_sentence_is_cut_and_says_so() -> None:
    summary = summary_of("word " * 100)
    assert len(summary) == 200 and summary.endswith("...")
