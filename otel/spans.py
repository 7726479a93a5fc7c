"""Span processors of our own."""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel.context import SESSION_ID_ATTRIBUTE, current_session_id


class SessionIdSpanProcessor(SpanProcessor):
    """Copies the session id of the context onto every span started in it.

    Phase, LLM, search and outbound HTTP spans all get ``session_id`` without the code that
    starts them knowing about sessions.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        session_id = current_session_id(parent_context)
        if session_id is not None:
            span.set_attribute(SESSION_ID_ATTRIBUTE, session_id)

    def on_end(self, span: ReadableSpan) -> None:
        return None
