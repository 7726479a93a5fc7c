"""The session id travels in the OpenTelemetry context, so spans and log lines can both read it.

A private context key rather than baggage: baggage is propagated on outbound HTTP, and the
session id has no business reaching a third-party LLM or search API.
"""

from __future__ import annotations

from contextvars import Token

from opentelemetry import context

SESSION_ID_KEY = context.create_key("fit_check.session_id")
SESSION_ID_ATTRIBUTE = "session_id"


def current_session_id(ctx: context.Context | None = None) -> str | None:
    value = context.get_value(SESSION_ID_KEY, ctx)
    return value if isinstance(value, str) else None


def bind_session(session_id: str) -> Token[context.Context]:
    """Make ``session_id`` current; returns the token for :func:`opentelemetry.context.detach`."""
    return context.attach(context.set_value(SESSION_ID_KEY, session_id))
