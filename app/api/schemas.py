"""HTTP-only answers and the published SSE schema; they are also the OpenAPI documentation."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter

from app.pipeline.events import EVENT_PAYLOADS


class LivenessResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessResponse(BaseModel):
    """200 while the instance takes new streams; 503 (an ErrorBody) once it drains."""

    status: Literal["ready"] = "ready"


SSE_DESCRIPTION = """A `text/event-stream`. Each event is `id: <id>`, `event: <type>` and
`data: <json>`: `session` first, then per phase `phase` ... `phase_complete`, `thought`
events (when `include_thoughts`), `progress` (at most one a second while a phase waits on a
long LLM answer), `response` chunks of the report, and exactly one terminal
event: `complete` or `error`, whose id ends in `.end`. The first frame is a `retry:` hint.
Comment lines (`: ping`) keep idle connections alive. A client that lost the connection
sends the last id it got as `Last-Event-ID` (an EventSource does this itself) and reads on
from there; 204 means there is nothing to resume. The payload schemas are in the components
section: SessionEvent, PhaseEvent, ThoughtEvent, PhaseCompleteEvent, ProgressEvent,
ResponseEvent, CompleteEvent, ErrorEvent."""


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
            for name, model in EVENT_PAYLOADS.items()
        ]
    }


def document_sse_events(app: FastAPI) -> None:
    """Put the SSE payload schemas into the OpenAPI components, where /docs shows them.

    They are generated from ``EVENT_PAYLOADS``, the types the pipeline builds events with.
    """
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in EVENT_PAYLOADS.values():
                components[model.__name__] = TypeAdapter(model).json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            app.openapi_schema = schema
        return app.openapi_schema

    # [method-assign]: replacing the method is FastAPI's documented way to extend the schema.
    app.openapi = openapi  # type: ignore[method-assign]
