"""The SSE events of a fit-check stream: the one definition of their names and payloads.

Payloads are ``TypedDict``\\ s: the type checker checks every event the pipeline builds,
building one costs no more than a dict (about 40 per stream), and ``EVENT_PAYLOADS`` is
what the OpenAPI document publishes (``app.api.schemas``), so the published schema and
the events sent are the same definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, get_args

import orjson
from pydantic import ConfigDict, Field, with_config

# typing_extensions' TypedDict: pydantic reads field descriptions and `extra` from it
# before Python 3.12 (the standard library's would do from 3.12 on).
from typing_extensions import TypedDict

Phase = Literal[
    "connecting", "deep_research", "skeptical_comparison", "skills_matching", "generate_results"
]
#: The five phases, in order. A closed set: the values are metric label values.
PHASES: tuple[Phase, ...] = get_args(Phase)

#: Codes of the ``error`` event. INVALID_QUERY and RATE_LIMITED are not among them: they
#: are HTTP error answers (422, 429), sent before any stream starts.
StreamErrorCode = Literal[
    "AGENT_ERROR",
    "SEARCH_ERROR",
    "LLM_ERROR",
    "TIMEOUT",
    "SHUTTING_DOWN",
    "SLOW_READER",
    "INTERRUPTED",
]
ThoughtKind = Literal["reasoning", "tool_call", "observation"]

_CLOSED = ConfigDict(extra="forbid")


@with_config(_CLOSED)
class SessionEvent(TypedDict):
    session_id: str
    trace_id: Annotated[str | None, Field(description="Paste into Jaeger to see the trace.")]


@with_config(_CLOSED)
class PhaseEvent(TypedDict):
    phase: Phase
    message: str


@with_config(_CLOSED)
class ThoughtEvent(TypedDict):
    step: int
    type: ThoughtKind
    content: str
    tool: NotRequired[str]
    input: NotRequired[str]


@with_config(_CLOSED)
class PhaseCompleteEvent(TypedDict):
    phase: Phase
    summary: str
    data: dict[str, Any]
    duration_ms: int


@with_config(_CLOSED)
class ProgressEvent(TypedDict):
    """A long LLM call in a phase that streams nothing else: it is still going."""

    phase: Phase
    characters: Annotated[int, Field(description="Characters of the answer received so far.")]


@with_config(_CLOSED)
class ResponseEvent(TypedDict):
    chunk: Annotated[str, Field(description="The next piece of the markdown report.")]


@with_config(_CLOSED)
class CompleteEvent(TypedDict):
    duration_ms: int
    session_id: str
    trace_id: str | None
    cost_usd: Annotated[
        float,
        Field(
            description="US dollars the session's LLM calls cost, from the price table "
            "(0 offline); the calls counted in unpriced_calls are not in it."
        ),
    ]
    unpriced_calls: Annotated[
        int, Field(description="LLM calls whose model has no price: their cost is unknown.")
    ]


@with_config(_CLOSED)
class ErrorEvent(TypedDict):
    code: Annotated[
        StreamErrorCode,
        Field(
            description="SHUTTING_DOWN: the instance is draining; send the request again. "
            "SLOW_READER: the connection took no events for a while and the analysis was "
            "stopped. INTERRUPTED: the replica running the analysis stopped (or the shared "
            "session store lost its frames) before it ended; send the request again."
        ),
    ]
    message: str


EventType = Literal[
    "session", "phase", "thought", "phase_complete", "progress", "response", "complete", "error"
]
EventData = (
    SessionEvent
    | PhaseEvent
    | ThoughtEvent
    | PhaseCompleteEvent
    | ProgressEvent
    | ResponseEvent
    | CompleteEvent
    | ErrorEvent
)
#: The contract: each event name and the payload its ``data:`` line carries.
EVENT_PAYLOADS: dict[EventType, type[Any]] = {
    "session": SessionEvent,
    "phase": PhaseEvent,
    "thought": ThoughtEvent,
    "phase_complete": PhaseCompleteEvent,
    "progress": ProgressEvent,
    "response": ResponseEvent,
    "complete": CompleteEvent,
    "error": ErrorEvent,
}
TERMINAL_EVENTS: frozenset[EventType] = frozenset({"complete", "error"})


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event: ``id: <id>``, ``event: <type>`` and ``data: <json>``."""

    type: EventType
    data: EventData

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


#: No frame is larger than this: text from a provider is split (report chunks) or clipped
#: (thoughts) to ``MAX_TEXT_CHARS``, which JSON-escapes to at most 12 KiB, and any other
#: payload past it is replaced by a note (``bounded_frame``).
MAX_FRAME_BYTES = 16_384
MAX_TEXT_CHARS = 1024


def split_text(text: str) -> list[str]:
    """``text`` in pieces of at most ``MAX_TEXT_CHARS``: one report chunk per piece."""
    if len(text) <= MAX_TEXT_CHARS:
        return [text]
    return [text[i : i + MAX_TEXT_CHARS] for i in range(0, len(text), MAX_TEXT_CHARS)]


def clip_text(text: str) -> str:
    """``text`` cut to ``MAX_TEXT_CHARS``, saying how much was left out."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return f"{text[:MAX_TEXT_CHARS]}... ({len(text) - MAX_TEXT_CHARS} more characters)"


def bounded_frame(event: Event, event_id: str) -> bytes:
    """The event's frame, or, past ``MAX_FRAME_BYTES``, a frame that says what was left
    out: a step's data from a provider (search results) can be any size."""
    frame = event.encode(event_id)
    if len(frame) <= MAX_FRAME_BYTES:
        return frame
    if event.type == "phase_complete":
        data: Any = dict(event.data)
        data["data"] = {"omitted": f"{len(frame)} bytes, over the {MAX_FRAME_BYTES} limit"}
        data["summary"] = clip_text(data["summary"])
        return Event("phase_complete", data).encode(event_id)
    raise ValueError(f"a {event.type} frame of {len(frame)} bytes")  # split or clipped before


def _json(data: EventData) -> bytes:
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

    def __init__(self, code: StreamErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: StreamErrorCode = code
        self.message = message
