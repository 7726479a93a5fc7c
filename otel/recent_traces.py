"""The spans of recent traces, kept in memory when no trace back-end takes them.

With nothing configured (``make run``) the service exports no span, so its own
``/trace/{id}`` page reads the trace from here. Two bounds hold whatever the traffic: a
number of traces and an estimate of their bytes; past either, the trace that received a
span longest ago goes first. A trace alone over the byte bound keeps the spans that fit
and counts the rest.

What is kept is less than what an exporter would send: no events, links or resource; no
prompt or completion text (the ``gen_ai.*.messages`` and system instructions that
``FIT_CHECK_CAPTURE_CONTENT`` puts on LLM spans are dropped); URL attributes redacted
again (``otel.redact``), as the span processors already did; and a failed span's status
message replaced by its ``error.type``, so no exception text is held either.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_SYSTEM_INSTRUCTIONS,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from otel.facade import KeptSpan, KeptTrace
from otel.redact import QUERY_ATTRIBUTE, URL_ATTRIBUTES, redact_query, redact_url

log = logging.getLogger("fit_check.telemetry")

DEFAULT_MAX_TRACES = 50
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
#: Attributes that may hold the users' text: never kept.
CONTENT_ATTRIBUTES = frozenset(
    (GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, GEN_AI_SYSTEM_INSTRUCTIONS)
)
#: What a kept span costs besides its text: the record, its ids and its attribute dict,
#: and each attribute's slot and value object (measured with tracemalloc, rounded up).
SPAN_OVERHEAD_BYTES = 500
ATTRIBUTE_OVERHEAD_BYTES = 40


@dataclass(slots=True)
class _Trace:
    spans: list[KeptSpan] = field(default_factory=list)
    bytes: int = 0
    dropped: int = 0


class RecentTraceStore(SpanProcessor):
    """Keeps finished spans by trace, within ``max_traces`` traces and ``max_bytes``
    (estimated, ``estimated_bytes``). Spans end on any thread: one lock guards the store.

    Add it after the span processors that redact, so it sees spans as exporters would.
    """

    def __init__(
        self, max_traces: int = DEFAULT_MAX_TRACES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_traces < 1 or max_bytes < 1:
            raise ValueError(
                f"a trace store needs room: max_traces={max_traces}, max_bytes={max_bytes}"
            )
        self._max_traces = max_traces
        self._max_bytes = max_bytes
        self._traces: OrderedDict[str, _Trace] = OrderedDict()  # least recently added to first
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def max_traces(self) -> int:
        return self._max_traces

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def bytes(self) -> int:
        """The estimated size of everything kept now (at most ``max_bytes``)."""
        return self._bytes

    def trace_ids(self) -> tuple[str, ...]:
        """The traces kept, the next to go first."""
        with self._lock:
            return tuple(self._traces)

    def get(self, trace_id: str) -> KeptTrace | None:
        with self._lock:
            kept = self._traces.get(trace_id)
            if kept is None or not (kept.spans or kept.dropped):
                return None
            return KeptTrace(spans=tuple(kept.spans), dropped=kept.dropped)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            record = kept_span(span)
        except Exception:  # telemetry must never break the code that ended the span
            log.warning("Could not keep span %s", span.name, exc_info=True)
            return
        if record is not None:
            self._add(record, estimated_bytes(record))

    def _add(self, record: KeptSpan, size: int) -> None:
        with self._lock:
            trace = self._traces.pop(record.trace_id, None)
            if trace is None:
                trace = _Trace()
                while len(self._traces) >= self._max_traces:
                    self._evict_oldest()
            self._traces[record.trace_id] = trace  # the most recently added to, last
            if trace.bytes + size > self._max_bytes:  # this trace alone would pass the bound
                trace.dropped += 1
                return
            while self._bytes + size > self._max_bytes:
                self._evict_oldest()
            trace.spans.append(record)
            trace.bytes += size
            self._bytes += size

    def _evict_oldest(self) -> None:
        _, gone = self._traces.popitem(last=False)
        self._bytes -= gone.bytes

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def kept_span(span: ReadableSpan) -> KeptSpan | None:
    """What the store keeps of ``span`` (module docstring); None for a span without ids."""
    context = span.context
    if context is None or not context.is_valid:
        return None
    attributes: dict[str, AttributeValue] = {
        name: value
        for name, value in (span.attributes or {}).items()
        if name not in CONTENT_ATTRIBUTES
    }
    for name in URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str):
            attributes[name] = redact_url(value)
    query = attributes.get(QUERY_ATTRIBUTE)
    if isinstance(query, str):
        attributes[QUERY_ATTRIBUTE] = redact_query(query)
    error = None
    if span.status.status_code is StatusCode.ERROR:
        error = str(attributes.get(ERROR_TYPE, "error"))
    return KeptSpan(
        trace_id=format(context.trace_id, "032x"),
        span_id=format(context.span_id, "016x"),
        parent_id="" if span.parent is None else format(span.parent.span_id, "016x"),
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        error=error,
        attributes=attributes,
    )


def estimated_bytes(span: KeptSpan) -> int:
    """What keeping ``span`` costs, from its text: an estimate that errs on the high side."""
    size = SPAN_OVERHEAD_BYTES + _text_bytes(span.name) + _text_bytes(span.error or "")
    for name, value in span.attributes.items():
        size += ATTRIBUTE_OVERHEAD_BYTES + _text_bytes(name) + _value_bytes(value)
    return size


def _value_bytes(value: AttributeValue) -> int:
    if isinstance(value, str):
        return _text_bytes(value)
    if isinstance(value, bytes):
        return 33 + len(value)
    if isinstance(value, Mapping):
        return sum(
            ATTRIBUTE_OVERHEAD_BYTES + _text_bytes(key) + _value_bytes(item)
            for key, item in value.items()
        )
    if isinstance(value, Sequence):
        return sum(ATTRIBUTE_OVERHEAD_BYTES // 2 + _value_bytes(item) for item in value)
    return 32  # a number, a boolean or None


def _text_bytes(text: str) -> int:
    """A str object's size: its header plus up to 4 bytes a character (CPython's widest)."""
    return 49 + len(text) * (1 if text.isascii() else 4)
