"""Request, response and event schemas; they are also the OpenAPI documentation."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# Not in a query: C0 controls other than tab/newline/CR, DEL, bidi embedding and override
# controls (they make text display other than it reads), and UTF-16 surrogates (a lone one
# cannot even be encoded for the response). Written with escapes so the OpenAPI document
# stays ASCII; the same pattern is the check and its documentation.
_BANNED = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
#: The documented rule. Not what runs: a backtracking engine takes quadratic time on it
#: (2,000 characters and a NUL at the end cost 38 ms a check).
QUERY_PATTERN = rf"^[^{_BANNED}]*[^\s{_BANNED}][^{_BANNED}]*$"
#: What runs, in linear time: one scan for a banned character. "Something besides
#: whitespace" is already the length rule after stripping.
_BANNED_CHARACTER = re.compile(f"[{_BANNED}]")


class FitCheckRequest(BaseModel):
    """What the employer asks. The same model validates the POST body and the GET query."""

    model_config = ConfigDict(extra="forbid")

    query: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
    ] = Field(
        description="A company name or a job description (1-2,000 characters after trimming; "
        "no control characters, bidi overrides or lone surrogates).",
        examples=["Senior Python engineer, FastAPI, Kubernetes"],
        json_schema_extra={"pattern": QUERY_PATTERN},
    )
    session_id: Annotated[str, Field(pattern=SESSION_ID_PATTERN)] | None = Field(
        None, description="Optional client-chosen id; the server makes a UUID4 when absent."
    )
    include_thoughts: bool = Field(True, description="Stream `thought` events as well.")

    @field_validator("query")
    @classmethod
    def _printable(cls, value: str) -> str:
        if _BANNED_CHARACTER.search(value) is not None:
            raise ValueError(
                "query must not contain control characters, bidi overrides or lone surrogates"
            )
        return value


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `query`.")
    rule: str = Field(description="The rule it broke, e.g. `string_too_long`.")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx answer of the API has this shape."""

    code: str = Field(description="INVALID_QUERY, RATE_LIMITED, PAYLOAD_TOO_LARGE, NOT_FOUND...")
    message: str
    errors: list[FieldError] = Field(default_factory=list)


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    service: Literal["fit-check"] = "fit-check"
    agent_ready: bool
    active_sessions: int
    circuit_breakers: dict[str, Literal["closed", "open", "half_open"]]
    timestamp: float


class LivenessResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessResponse(BaseModel):
    """200 while the instance takes new streams; 503 (an ErrorBody) once it drains."""

    status: Literal["ready"] = "ready"


# --- SSE event payloads (documentation of the stream; each is `data:` of one event) ------
class SessionEvent(BaseModel):
    session_id: str
    trace_id: str | None = Field(description="Paste into Jaeger to see this request's trace.")


class PhaseEvent(BaseModel):
    phase: Literal[
        "connecting", "deep_research", "skeptical_comparison", "skills_matching", "generate_results"
    ]
    message: str


class ThoughtEvent(BaseModel):
    step: int
    type: Literal["reasoning", "tool_call", "observation"]
    content: str
    tool: str | None = None
    input: str | None = None


class PhaseCompleteEvent(BaseModel):
    phase: str
    summary: str
    data: dict[str, Any]
    duration_ms: int


class ResponseEvent(BaseModel):
    chunk: str


class CompleteEvent(BaseModel):
    duration_ms: int
    session_id: str
    trace_id: str | None


class ErrorEvent(BaseModel):
    code: Literal["AGENT_ERROR", "SEARCH_ERROR", "LLM_ERROR", "TIMEOUT", "SHUTTING_DOWN"] = Field(
        description="SHUTTING_DOWN: the instance is draining; send the request again. "
        "(INVALID_QUERY and RATE_LIMITED are HTTP error answers, never stream events.)"
    )
    message: str


SSE_DESCRIPTION = """A `text/event-stream`. Each event is `id: <id>`, `event: <type>` and
`data: <json>`: `session` first, then per phase `phase` ... `phase_complete`, `thought`
events (when `include_thoughts`), `response` chunks of the report, and exactly one terminal
event: `complete` or `error`, whose id ends in `.end`. The first frame is a `retry:` hint.
Comment lines (`: ping`) keep idle connections alive. A client that lost the connection
sends the last id it got as `Last-Event-ID` (an EventSource does this itself) and reads on
from there; 204 means there is nothing to resume. The payload schemas are in the components
section: SessionEvent, PhaseEvent, ThoughtEvent, PhaseCompleteEvent, ResponseEvent,
CompleteEvent, ErrorEvent."""

SSE_EVENT_MODELS: dict[str, type[BaseModel]] = {
    "session": SessionEvent,
    "phase": PhaseEvent,
    "thought": ThoughtEvent,
    "phase_complete": PhaseCompleteEvent,
    "response": ResponseEvent,
    "complete": CompleteEvent,
    "error": ErrorEvent,
}


def sse_event_schema() -> dict[str, Any]:
    """One SSE event as OpenAPI describes a ``text/event-stream`` item (``schema`` before 3.2).

    ``data`` is a JSON string whose shape depends on ``event``; ``contentSchema`` says which.
    """
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": name},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    },
                    "id": {"type": "string"},
                    "retry": {"type": "integer"},
                },
            }
            for name, model in SSE_EVENT_MODELS.items()
        ]
    }


def document_sse_events(app: FastAPI) -> None:
    """Put the SSE payload schemas into the OpenAPI components, where /docs shows them."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in SSE_EVENT_MODELS.values():
                components[model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
