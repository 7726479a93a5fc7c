"""Query strings out of URLs: the GET form's ``query=`` is the user's own text.

Span attributes and log lines keep a URL's path and parameter names and lose every value:
``/api/fit-check/stream?query=REDACTED&session_id=REDACTED``. A parameter name that is not
a plain identifier is input too, and goes the same way.
"""

from __future__ import annotations

import re

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

REDACTED = "REDACTED"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
#: Attributes that hold a URL with its query (old and stable HTTP conventions), and the
#: one that holds the query alone.
URL_ATTRIBUTES = ("http.url", "http.target", "url.full")
QUERY_ATTRIBUTE = "url.query"


def redact_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        if pair:
            name = pair.split("=", 1)[0]
            pairs.append(f"{name if _PLAIN_NAME.fullmatch(name) else REDACTED}={REDACTED}")
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """``url`` with every query value replaced; a URL without a query is returned as is."""
    base, separator, query = url.partition("?")
    if not separator:
        return url
    return f"{base}?{redact_query(query.partition('#')[0])}"


def redact_url_attributes(span: trace.Span) -> None:
    """Rewrite the URL attributes a span has now (a no-op for non-SDK spans)."""
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return
    for name in URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(name, redact_url(value))
    query = attributes.get(QUERY_ATTRIBUTE)
    if isinstance(query, str) and query:
        span.set_attribute(QUERY_ATTRIBUTE, redact_query(query))


class UrlRedactingSpanProcessor(SpanProcessor):
    """Rewrites URL attributes as spans start, before any exporter can see them.

    Outbound HTTP client spans (a search API's ``q=``) set their URL when they start. The
    ASGI server span sets its attributes again after it starts, so its request hook
    redacts too (``otel.instrumentation``).
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.kind is not trace.SpanKind.INTERNAL:  # phases carry no URL: skip the lookups
            redact_url_attributes(span)

    def on_end(self, span: ReadableSpan) -> None:
        return None
