"""A trace as a tree, for a terminal and the ``/trace/{id}`` page: read from Jaeger's
query API, or from the spans this process keeps when no back-end is configured.

Jaeger's HTTP API v3 (``GET /api/v3/traces/{trace_id}``) answers OTLP JSON: resource
spans, scope spans, spans with hex ids, nanosecond times and typed attribute values. This
reads just enough of it to show where the time went, which span failed and the attributes
people look for, where Jaeger's UI is not at hand (the Go-built Jaeger has none). The
spans kept in memory (``KeptSpan``, through the telemetry facade) become the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from otel.facade import KeptSpan

#: The attributes worth a glance, in the order they are shown.
KEY_ATTRIBUTES = (
    "fit_check.outcome",
    "fit_check.cancel_reason",
    "fit_check.resumed_after",
    "session_id",
    "http.response.status_code",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "fit_check.search.result_count",
    "error.type",
)


class TraceNotFound(Exception):
    pass


@dataclass(slots=True)
class SpanRow:
    span_id: str
    parent_id: str
    name: str
    start_ns: int
    end_ns: int
    error: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    children: list[SpanRow] = field(default_factory=list)


def fetch_trace(jaeger_url: str, trace_id: str, *, timeout_s: float = 10.0) -> list[SpanRow]:
    """Every span of ``trace_id``; TraceNotFound when Jaeger does not have it (yet)."""
    return read_trace(httpx.get(_trace_url(jaeger_url, trace_id), timeout=timeout_s), trace_id)


async def fetch_trace_async(
    client: httpx.AsyncClient, jaeger_url: str, trace_id: str
) -> list[SpanRow]:
    return read_trace(await client.get(_trace_url(jaeger_url, trace_id)), trace_id)


def _trace_url(jaeger_url: str, trace_id: str) -> str:
    return f"{jaeger_url.rstrip('/')}/api/v3/traces/{trace_id}"


def read_trace(response: httpx.Response, trace_id: str) -> list[SpanRow]:
    if response.status_code == 404:
        raise TraceNotFound(trace_id)
    response.raise_for_status()
    body = response.json()
    spans = list(_spans(body.get("result", body)))
    if not spans:
        raise TraceNotFound(trace_id)
    return spans


def _spans(result: dict[str, Any]) -> Iterator[SpanRow]:
    for resource_spans in result.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                status = span.get("status") or {}
                failed = status.get("code") in (2, "STATUS_CODE_ERROR")
                yield SpanRow(
                    span_id=span.get("spanId", ""),
                    parent_id=span.get("parentSpanId", ""),
                    name=span.get("name", "?"),
                    start_ns=int(span.get("startTimeUnixNano", 0)),
                    end_ns=int(span.get("endTimeUnixNano", 0)),
                    error=(status.get("message") or "error") if failed else None,
                    attributes={
                        item["key"]: _value(item.get("value", {}))
                        for item in span.get("attributes", [])
                    },
                )


def kept_rows(spans: Sequence[KeptSpan]) -> list[SpanRow]:
    """The rows of spans kept in memory: fresh ones, since ``render`` links them up."""
    return [
        SpanRow(
            span_id=span.span_id,
            parent_id=span.parent_id,
            name=span.name,
            start_ns=span.start_ns,
            end_ns=span.end_ns,
            error=span.error,
            attributes=dict(span.attributes),
        )
        for span in spans
    ]


def _value(value: dict[str, Any]) -> Any:
    """An OTLP AnyValue: ``{"stringValue": "x"}``, ``{"intValue": "3"}`` (a string in JSON)..."""
    for kind, read in (
        ("stringValue", str),
        ("intValue", int),
        ("doubleValue", float),
        ("boolValue", bool),
    ):
        if kind in value:
            return read(value[kind])
    if "arrayValue" in value:
        return [_value(item) for item in value["arrayValue"].get("values", [])]
    return None


def render(spans: list[SpanRow]) -> list[str]:
    """The trace as indented lines: offset from the trace's start, duration, status, name
    and key attributes; children in the order they started."""
    by_id = {span.span_id: span for span in spans}
    roots: list[SpanRow] = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        parent = by_id.get(span.parent_id)
        (parent.children if parent is not None else roots).append(span)
    origin = min(span.start_ns for span in spans)
    lines = [f"{'offset':>9} {'duration':>9}  status  span"]

    def walk(span: SpanRow, depth: int, inherited: dict[str, Any]) -> None:
        offset_ms = (span.start_ns - origin) / 1e6
        duration_ms = (span.end_ns - span.start_ns) / 1e6
        status = "ERROR " if span.error else "ok    "
        shown = " ".join(
            f"{key}={span.attributes[key]}"
            for key in KEY_ATTRIBUTES
            if key in span.attributes and inherited.get(key) != span.attributes[key]
        )
        lines.append(
            f"{offset_ms:>7.1f}ms {duration_ms:>7.1f}ms  {status}  {'  ' * depth}{span.name}"
            + (f"  [{shown}]" if shown else "")
        )
        for child in span.children:  # what the parent showed is not repeated
            walk(child, depth + 1, {**inherited, **span.attributes})

    for root in roots:
        walk(root, 0, {})
    return lines
