"""What an offline stream makes, as the floor of ``bench.ir`` (``bench/floor_drive.py``)
reproduces it: the phases that call the LLM and the one that searches, in order.
``tests/app/pipeline/test_stream_shape.py`` holds them to a real stream's spans."""

from __future__ import annotations

LLM_PHASES = ("skeptical_comparison", "skills_matching", "generate_results")
SEARCH_PHASES = ("deep_research",)
