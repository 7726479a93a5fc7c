"""The SSE events of a fit-check stream: names, payloads and their wire form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class Phase(StrEnum):
    """The five phases, in order. A closed set: the values are metric label values."""

    CONNECTING = "connecting"
    DEEP_RESEARCH = "deep_research"
    SKEPTICAL_COMPARISON = "skeptical_comparison"
    SKILLS_MATCHING = "skills_matching"
    GENERATE_RESULTS = "generate_results"


PHASES: tuple[str, ...] = tuple(p.value for p in Phase)


class ErrorCode(StrEnum):
    INVALID_QUERY = "INVALID_QUERY"
    RATE_LIMITED = "RATE_LIMITED"
    AGENT_ERROR = "AGENT_ERROR"
    SEARCH_ERROR = "SEARCH_ERROR"
    LLM_ERROR = "LLM_ERROR"
    TIMEOUT = "TIMEOUT"
    #: The instance is shutting down; the same request sent again is served elsewhere.
    SHUTTING_DOWN = "SHUTTING_DOWN"


TERMINAL_EVENTS = frozenset({"complete", "error"})


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event: ``event: <type>`` and ``data: <json>``."""

    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    def encode(self, event_id: str) -> bytes:
        """The event's SSE frame. JSON escapes CR and LF, so a payload is always one
        ``data:`` line and can never end the frame early or forge another event."""
        return b"id: %s\r\nevent: %s\r\ndata: %s\r\n\r\n" % (
            event_id.encode(),
            self.type.encode(),
            _json(self.data),
        )


def _json(data: dict[str, Any]) -> bytes:
    """orjson (a quarter of json.dumps's cost, ~40 events a stream), with a fallback.

    orjson refuses text that is not valid Unicode; a provider's JSON can still decode to a
    lone surrogate (``"\\ud800"``), which stays escaped instead of ending the stream.
    """
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return json.dumps(data, ensure_ascii=True).encode()


class PipelineError(Exception):
    """A failure the client is told about with an ``error`` event of this code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
