"""The telemetry facade: the only telemetry the business code sees.

The pipeline writes ``with telemetry.phase("deep_research"):`` and nothing else; spans,
metrics and log lines for that phase follow from it. The facade uses only the OpenTelemetry
API, so it works the same with real SDK providers, in-memory test providers, or the no-op
providers of ``OTEL_SDK_DISABLED=true``. It never raises into the caller on its own account
and re-raises the caller's exceptions unchanged.

One policy for every span it makes (phases, LLM calls, search calls), in ``_traced``:

* an exception: the span gets ERROR status, ``error.type`` and the exception as an event;
  the call counts as ``error`` in its metrics;
* a cancellation (the client left, the request timed out, the instance shut down): the
  span gets ERROR status and ``error.type=cancelled``, and no metric is recorded: the
  spec's call statuses are success and error, and a duration cut short by someone else
  would skew the latency histograms. The request's own counter says ``cancelled``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol, get_args

from opentelemetry import context, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.metrics import Meter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_CONVERSATION_ID,
    GEN_AI_EVALUATION_EXPLANATION,
    GEN_AI_EVALUATION_NAME,
    GEN_AI_EVALUATION_SCORE_LABEL,
    GEN_AI_EVALUATION_SCORE_VALUE,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    GEN_AI_TOKEN_TYPE,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from otel.content import ContentCapture, ContentRedactor, on_events, on_spans
from otel.context import SESSION_ID_ATTRIBUTE, bind_session, current_session_id
from otel.metrics import CallStatus, Instruments, RequestStatus

if TYPE_CHECKING:  # the SDK stays out of what business code loads
    from otel.histograms import LeanHistograms

log = logging.getLogger("fit_check.telemetry")

OUTCOME_ATTRIBUTE = "fit_check.outcome"
CANCEL_REASON_ATTRIBUTE = "fit_check.cancel_reason"
RESUMED_AFTER_ATTRIBUTE = "fit_check.resumed_after"
PHASE_ATTRIBUTE = "fit_check.phase"
#: False on an LLM span whose provider reported no token usage (absent when it did).
USAGE_REPORTED_ATTRIBUTE = "fit_check.llm.usage_reported"
#: US dollars: an LLM call's cost from the price table, and the sum over a phase's or a
#: request's priced calls. (The GenAI conventions have no cost attribute yet.)
COST_ATTRIBUTE = "fit_check.cost_usd"
#: An LLM call whose model is not in the price table (its cost is unknown, not zero); on a
#: phase or request span, how many of its calls were unpriced.
UNPRICED_ATTRIBUTE = "fit_check.llm.unpriced_calls"
CANCELLED: Final = "cancelled"

#: Why a request was refused before any work started: the closed label set of
#: ``fit_check_rejected_requests_total{reason}`` (no input ever becomes a label).
RejectionReason = Literal[
    "origin_not_allowed",  # 403: a browser page on an origin outside ALLOWED_ORIGINS
    "invalid_request",  # 400/415/422: query, session id, body, its type or Last-Event-ID
    "payload_too_large",  # 413: body over FIT_CHECK_MAX_BODY_BYTES
    "rate_limited",  # 429: FIT_CHECK_MAX_CONCURRENT_SESSIONS streams already running
    "shutting_down",  # 503: the instance is draining
    "header_too_large",  # 431: request headers over FIT_CHECK_MAX_HEADER_BYTES
    "header_timeout",  # 408: headers unfinished after FIT_CHECK_HEADER_TIMEOUT_S
    "body_timeout",  # 408: body unfinished FIT_CHECK_BODY_TIMEOUT_S after its headers
    "host_not_allowed",  # 421: a Host outside loopback, HOST and FIT_CHECK_ALLOWED_HOSTS
    "malformed_request",  # 400: not parsable as HTTP/1.1 (a NUL in a header, a bad request line)
    "session_store_unavailable",  # 503: Redis down and FIT_CHECK_REDIS_FAILURE_MODE=closed
    "budget_exceeded",  # 429: this hour's LLM spend reached FIT_CHECK_BUDGET_USD_PER_HOUR
]
REJECTION_REASONS: tuple[RejectionReason, ...] = get_args(RejectionReason)


#: Why a request was cancelled: its client went away, the instance shut down, or its
#: client's connection stopped taking events.
CancelReason = Literal["client_gone", "shutdown", "slow_reader"]
SpanOutcome = Literal["success", "error", "cancelled"]


@dataclass(frozen=True, slots=True)
class TraceRef:
    """The current request's trace: its id for people, its context for W3C headers."""

    trace_id: str
    #: ``00-<trace id>-<span id>-<flags>``: a ``traceresponse`` header, or the
    #: ``traceparent`` of a span that should join this trace.
    traceparent: str


@dataclass(slots=True)
class CostSum:
    """What the LLM calls inside a request or a phase cost so far."""

    cost_usd: float = 0.0
    #: Calls whose model has no price: the sum above leaves them out.
    unpriced_calls: int = 0

    def add(self, cost_usd: float | None) -> None:
        if cost_usd is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += cost_usd

    def annotate(self, span: Span) -> None:
        if self.cost_usd or self.unpriced_calls:
            span.set_attribute(COST_ATTRIBUTE, round(self.cost_usd, 9))
        if self.unpriced_calls:
            span.set_attribute(UNPRICED_ATTRIBUTE, self.unpriced_calls)


_PROPAGATOR = TraceContextTextMapPropagator()

#: The cost sums an LLM call adds to: its request's and its phase's.
_COST_SUMS: ContextVar[tuple[CostSum, ...]] = ContextVar("fit_check_cost_sums", default=())


@contextmanager
def _summing(total: CostSum) -> Iterator[None]:
    token = _COST_SUMS.set((*_COST_SUMS.get(), total))
    try:
        yield
    finally:
        _COST_SUMS.reset(token)


class Pricing(Protocol):
    """A model's price (``app.providers.prices.Price``)."""

    def cost(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> float: ...


@dataclass(slots=True)
class AnalysisRecord:
    """What the facade needs to know about one analysis (a session's pipeline run) while it
    runs: its outcome, cost and end, which the session fills in."""

    started: float
    outcome: RequestStatus = "success"
    first_event_seen: bool = False
    cancel_reason: CancelReason | None = None
    #: When the last reader's stream ended, if nobody is reading: a cancelled request's
    #: duration ends there, not when its resume window ran out.
    stream_ended: float | None = None
    #: The request's LLM calls so far (the ``complete`` event says it).
    cost: CostSum = field(default_factory=CostSum)


@dataclass(slots=True)
class PhaseScope:
    started: float

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


class ChatMessage(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass(slots=True)
class LLMCallScope:
    """One LLM call's usage: the provider fills it in as the stream ends (it is the
    ``usage`` a provider's ``stream`` gets), the caller adds the parts it received."""

    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: Input tokens the provider read from its prompt cache (when it says so).
    cached_input_tokens: int | None = None
    finish_reason: str | None = None
    output_parts: list[str] = field(default_factory=list)
    #: Set by the facade when the call ends: None when the model has no price.
    cost_usd: float | None = None
    #: ``time.perf_counter()`` at the first and the latest chunk, and how many came.
    first_chunk_at: float | None = None
    last_chunk_at: float | None = None
    chunks: int = 0

    def chunk(self) -> None:
        """A chunk of the answer arrived (the caller says so, once per chunk)."""
        now = time.perf_counter()
        if self.first_chunk_at is None:
            self.first_chunk_at = now
        self.last_chunk_at = now
        self.chunks += 1


@dataclass(slots=True)
class SearchCallScope:
    result_count: int = 0


@dataclass(frozen=True, slots=True)
class KeptSpan:
    """A finished span as this process keeps it when no trace back-end takes the spans:
    ids in hex (``parent_id`` empty for a root), times in Unix nanoseconds, ``error`` the
    span's ``error.type`` (or ``"error"``) when it failed, and no message text."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start_ns: int
    end_ns: int
    error: str | None
    attributes: Mapping[str, AttributeValue]


@dataclass(frozen=True, slots=True)
class KeptTrace:
    spans: tuple[KeptSpan, ...]
    #: Spans of this trace that arrived when it was already at the byte bound alone.
    dropped: int = 0


class RecentTraces(Protocol):
    """The spans of this process's recent traces, kept in memory within two bounds
    (``otel.recent_traces`` keeps them; the ``/trace/{id}`` page reads them)."""

    @property
    def max_traces(self) -> int: ...

    @property
    def max_bytes(self) -> int: ...

    def get(self, trace_id: str) -> KeptTrace | None:
        """The spans kept of ``trace_id`` (32 lowercase hex), or None when none are."""
        ...


@dataclass(slots=True)
class _Traced:
    span: Span
    started: float
    outcome: SpanOutcome = "success"
    error_type: str | None = None

    @property
    def counted(self) -> CallStatus | None:
        """The status the call's metrics record, or None for a cancelled call."""
        if self.outcome == "success":
            return "success"
        return "error" if self.outcome == "error" else None

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


@dataclass(frozen=True, slots=True)
class ScrapePolicy:
    """Whether ``/metrics`` on the public port answers, and to whom."""

    #: Several workers: each counts its own requests, so one scrape would see one at random.
    workers: int = 1
    #: The exposition has a port of its own (``FIT_CHECK_METRICS_PORT``).
    metrics_port: int | None = None
    #: A bearer token every scrape must carry (``FIT_CHECK_METRICS_TOKEN``).
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Exposition:
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class ScrapeRefused:
    """A scrape refused: the HTTP layer answers with the service's one error shape."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


class Telemetry:
    """Spans, metrics and logs for requests, phases and provider calls."""

    def __init__(
        self,
        *,
        tracer: Tracer,
        meter: Meter,
        service_version: str,
        render_metrics: Callable[[str | None], tuple[bytes, str]] | None = None,
        capture_content: bool = False,
        content_capture: ContentCapture = "NO_CONTENT",
        redactor: ContentRedactor | None = None,
        recent_traces: RecentTraces | None = None,
        histograms: LeanHistograms | None = None,
    ) -> None:
        #: FIT_CHECK_CAPTURE_CONTENT=true, the older switch, means SPAN_ONLY.
        if capture_content and content_capture == "NO_CONTENT":
            content_capture = "SPAN_ONLY"
        self._content_capture: ContentCapture = content_capture
        self._capture_content = content_capture != "NO_CONTENT"
        self._redact = redactor or ContentRedactor()
        self._tracer = tracer
        self._instruments = Instruments(
            meter, service_version=service_version, histograms=histograms
        )
        self._render_metrics = render_metrics
        self._recent_traces = recent_traces
        self._scrapes = ScrapePolicy()

    # --- wiring --------------------------------------------------------------------
    def prepare(
        self,
        *,
        phases: Sequence[str],
        llm_model: str,
        search_provider: str,
        rejection_reasons: Sequence[str],
        active_sessions: Callable[[], int],
        breaker_states: Callable[[], Mapping[str, int]],
        scrapes: ScrapePolicy | None = None,
    ) -> None:
        """Zero-fill the closed label sets, watch the service's own state, and say how
        ``/metrics`` on the public port is served (``scrape``)."""
        self._scrapes = scrapes or ScrapePolicy()
        self._instruments.zero_fill(
            phases=phases,
            llm_models=(llm_model,),
            search_providers=(search_provider,),
            rejection_reasons=rejection_reasons,
        )
        self._instruments.observe_state(
            active_sessions=active_sessions, breaker_states=breaker_states
        )

    def scrape(
        self, *, accept: str | None, authorization: str | None
    ) -> Exposition | ScrapeRefused:
        """``/metrics`` on the public port: the exposition in the format ``accept`` asks
        for, or why not, by the policy given to ``prepare``."""
        policy = self._scrapes
        if policy.workers > 1:
            return ScrapeRefused(
                404,
                "NOT_FOUND",
                f"{policy.workers} workers each count their own requests: read the metrics "
                "through the collector (OTEL_EXPORTER_OTLP_ENDPOINT), where every worker is its "
                "own instance",
            )
        if policy.metrics_port is not None:
            return ScrapeRefused(
                404, "NOT_FOUND", f"metrics are served on port {policy.metrics_port}"
            )
        if policy.token is not None and not bearer_token_matches(authorization, policy.token):
            return ScrapeRefused(
                401,
                "UNAUTHORIZED",
                "metrics need a bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if self._render_metrics is None:
            return ScrapeRefused(404, "NOT_FOUND", "metrics are off (OTEL_SDK_DISABLED=true)")
        body, content_type = self._render_metrics(accept)
        return Exposition(body, content_type)

    def render_metrics(self, accept: str | None) -> tuple[bytes, str] | None:
        """The Prometheus exposition, or None when metrics are disabled (benchmarks)."""
        return None if self._render_metrics is None else self._render_metrics(accept)

    @property
    def recent_traces(self) -> RecentTraces | None:
        """This process's recent traces when it keeps them (no trace back-end is
        configured), else None: the traces are then wherever the exporter sends them."""
        return self._recent_traces

    # --- requests ----------------------------------------------------------------
    @staticmethod
    def current_trace() -> TraceRef | None:
        """The current span's trace, if one is recorded."""
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        trace_id = format(span_context.trace_id, "032x")
        flags = int(span_context.trace_flags)
        return TraceRef(trace_id, f"00-{trace_id}-{span_context.span_id:016x}-{flags:02x}")

    @contextmanager
    def analysis(self, session_id: str, *, query_length: int) -> Iterator[AnalysisRecord]:
        """One session's analysis (its pipeline run, the spec's "request"): binds the session
        id, counts and times the outcome."""
        record = AnalysisRecord(started=time.perf_counter())
        token = bind_session(session_id)
        span = trace.get_current_span()
        span.set_attribute(SESSION_ID_ATTRIBUTE, session_id)
        log.info("Request started", extra={"query_length": query_length})
        try:
            with _summing(record.cost):
                yield record
        except asyncio.CancelledError:
            record.outcome = CANCELLED
            record.cancel_reason = record.cancel_reason or "client_gone"
            raise
        except BaseException:
            record.outcome = "error"
            raise
        finally:
            try:
                self._analysis_ended(span, record)
            finally:
                context.detach(token)

    def _analysis_ended(self, span: Span, record: AnalysisRecord) -> None:
        ended = time.perf_counter()
        if record.outcome == CANCELLED and record.stream_ended is not None:
            ended = record.stream_ended
        duration = ended - record.started
        span.set_attribute(OUTCOME_ATTRIBUTE, record.outcome)
        record.cost.annotate(span)
        extra: dict[str, object] = {"status": record.outcome, "duration_ms": int(duration * 1000)}
        if record.outcome != "success":
            span.set_status(Status(StatusCode.ERROR, record.outcome))
        if record.outcome == CANCELLED and record.cancel_reason:
            span.set_attribute(CANCEL_REASON_ATTRIBUTE, record.cancel_reason)
            extra["reason"] = record.cancel_reason
        self._instruments.requests.add(1, {"status": record.outcome})
        self._instruments.request_duration.record(duration)
        log.info("Request completed", extra=extra)

    @contextmanager
    def session_context(self, session_id: str) -> Iterator[None]:
        """Make ``session_id`` current for all an HTTP request does: its log lines (uvicorn's
        access-log line among them) and the spans started under it."""
        token = bind_session(session_id)
        try:
            yield
        finally:
            context.detach(token)

    @staticmethod
    def stream_resumed(session_id: str, after: int) -> None:
        """A reconnect reads on from event ``after``: said on its server span and logged."""
        span = trace.get_current_span()
        span.set_attribute(SESSION_ID_ATTRIBUTE, session_id)
        span.set_attribute(RESUMED_AFTER_ATTRIBUTE, after)
        log.info("Stream resumed", extra={"after_event": after})

    def rejected(self, reason: RejectionReason) -> None:
        """A request refused before any work started (load shedding, limits, bad input)."""
        self._instruments.rejected.add(1, {"reason": reason})

    def store_operation(self, operation: str, outcome: str, duration_s: float) -> None:
        """One call to the shared session store (``ok`` or ``error``)."""
        attributes = {"operation": operation, "outcome": outcome}
        self._instruments.store_operations.add(1, attributes)
        self._instruments.store_duration.record(duration_s, {"operation": operation})

    def stream_interrupted(self) -> None:
        """A resumed stream ended with INTERRUPTED: its producer died, or the store lost
        frames or could not be read."""
        self._instruments.streams_interrupted.add(1, {})

    @staticmethod
    @contextmanager
    def untraced() -> Iterator[None]:
        """Calls made inside make no spans (a session's frames copied to the store: one
        span per write would outnumber the session's own)."""
        # The key every instrumentation checks (``suppress_instrumentation`` sets it too),
        # from the API: the facade loads no instrumentation package.
        token = context.attach(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            yield
        finally:
            context.detach(token)

    def first_event(self, record: AnalysisRecord) -> None:
        """Record time to first event once per request (the first phase the client sees)."""
        if not record.first_event_seen:
            record.first_event_seen = True
            self._instruments.first_event.record(time.perf_counter() - record.started)

    # --- spans: one policy ------------------------------------------------------------
    @contextmanager
    def _traced(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue],
        on_end: Callable[[_Traced], None],
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Iterator[_Traced]:
        """A span around the caller's block, classified by the module's policy; ``on_end``
        records the metrics and the last attributes while the span is still open."""
        span = self._tracer.start_span(name, kind=kind, attributes=attributes)
        traced = _Traced(span=span, started=time.perf_counter())
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield traced
            except asyncio.CancelledError:
                traced.outcome, traced.error_type = CANCELLED, CANCELLED
                span.set_status(Status(StatusCode.ERROR, CANCELLED))
                span.set_attribute(ERROR_TYPE, CANCELLED)
                raise
            except BaseException as exc:
                traced.outcome, traced.error_type = "error", type(exc).__qualname__
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, traced.error_type))
                span.set_attribute(ERROR_TYPE, traced.error_type)
                raise
            finally:
                try:
                    on_end(traced)
                except Exception:  # telemetry never breaks the caller
                    log.warning("Telemetry failed to finish span %s", name, exc_info=True)

    # --- phases ---------------------------------------------------------------------
    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseScope]:
        """A child span, a completion count, a duration and two log lines for one phase."""
        attributes = {"phase": name}
        cost = CostSum()

        def ended(traced: _Traced) -> None:
            cost.annotate(traced.span)
            duration = traced.elapsed_s()
            if traced.counted is not None:
                self._instruments.phase_completions.add(1, {**attributes, "status": traced.counted})
                self._instruments.phase_duration.record(duration, attributes)
            log.info(
                "Phase completed",
                extra={
                    "phase": name,
                    "status": traced.outcome,
                    "duration_ms": int(duration * 1000),
                },
            )

        with (
            self._traced(f"fit_check.phase {name}", {PHASE_ATTRIBUTE: name}, ended) as traced,
            _summing(cost),
        ):
            log.info("Phase started", extra={"phase": name})
            yield PhaseScope(started=traced.started)

    # --- provider calls ---------------------------------------------------------------
    @contextmanager
    def llm_call(
        self,
        *,
        provider: str,
        model: str,
        input_messages: Sequence[ChatMessage] = (),
        operation: str = "chat",
        price: Pricing | None = None,
    ) -> Iterator[LLMCallScope]:
        """A GenAI client span plus the spec's LLM metrics; prompt and completion text only
        with content capture on (FIT_CHECK_CAPTURE_CONTENT). With the model's ``price``, the
        call's cost (from the tokens the provider reported) goes on the span, into the
        phase's and request's sums and the spend counter; without, it is counted unpriced."""
        scope = LLMCallScope()
        attributes: dict[str, AttributeValue] = {
            GEN_AI_OPERATION_NAME: operation,
            GEN_AI_PROVIDER_NAME: provider,
            GEN_AI_REQUEST_MODEL: model,
        }
        span_attributes = dict(attributes)
        session_id = current_session_id()
        if session_id is not None:
            span_attributes[GEN_AI_CONVERSATION_ID] = session_id
        sums = _COST_SUMS.get()

        def ended(traced: _Traced) -> None:
            span = traced.span
            metric_attributes = dict(attributes)
            self._record_cost(span, scope, price, model, sums)
            self._record_chunks(span, scope, traced.started, metric_attributes)
            if scope.response_model:
                span.set_attribute(GEN_AI_RESPONSE_MODEL, scope.response_model)
                metric_attributes[GEN_AI_RESPONSE_MODEL] = scope.response_model
            if scope.finish_reason:
                span.set_attribute(GEN_AI_RESPONSE_FINISH_REASONS, (scope.finish_reason,))
            if self._capture_content:
                self._record_content(span, input_messages, scope.output_parts)
            tokens = (
                ("input", GEN_AI_USAGE_INPUT_TOKENS, scope.input_tokens),
                ("output", GEN_AI_USAGE_OUTPUT_TOKENS, scope.output_tokens),
            )
            for _, attribute, count in tokens:
                if count is not None:
                    span.set_attribute(attribute, count)
            if scope.cached_input_tokens is not None:
                span.set_attribute(GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, scope.cached_input_tokens)
            if traced.counted is None:
                return
            duration = traced.elapsed_s()
            if traced.error_type is not None:
                metric_attributes[ERROR_TYPE] = traced.error_type
            self._instruments.llm_calls.add(1, {"model": model, "status": traced.counted})
            if traced.counted == "success" and scope.input_tokens is scope.output_tokens is None:
                # Nothing measured is not zero: no token attributes, and this says so.
                span.set_attribute(USAGE_REPORTED_ATTRIBUTE, False)
                self._instruments.llm_usage_missing.add(1, {"model": model})
            self._instruments.llm_latency.record(duration, {"model": model})
            self._instruments.genai_duration.record(duration, metric_attributes)
            for token_type, _, count in tokens:
                if count is not None:
                    self._instruments.genai_tokens.record(
                        count, {**metric_attributes, GEN_AI_TOKEN_TYPE: token_type}
                    )

        with self._traced(f"{operation} {model}", span_attributes, ended, SpanKind.CLIENT):
            yield scope

    def _record_cost(
        self,
        span: Span,
        scope: LLMCallScope,
        price: Pricing | None,
        model: str,
        sums: tuple[CostSum, ...],
    ) -> None:
        """The cost of the tokens reported so far (a call cut short by its client still
        costs what the provider reported); no tokens reported: nothing to price."""
        if scope.input_tokens is None and scope.output_tokens is None:
            return
        if price is None:
            span.set_attribute(UNPRICED_ATTRIBUTE, 1)
            self._instruments.llm_unpriced.add(1, {"model": model})
        else:
            scope.cost_usd = price.cost(
                scope.input_tokens or 0, scope.cached_input_tokens or 0, scope.output_tokens or 0
            )
            span.set_attribute(COST_ATTRIBUTE, round(scope.cost_usd, 9))
            self._instruments.llm_cost.add(scope.cost_usd, {"model": model})
        for total in sums:
            total.add(scope.cost_usd)

    def _record_chunks(
        self,
        span: Span,
        scope: LLMCallScope,
        started: float,
        attributes: Mapping[str, AttributeValue],
    ) -> None:
        """Time to the first chunk (on the span and a histogram) and the mean time per
        chunk after it, recorded once per call: a record per chunk would put the metric
        SDK's cost on every chunk the service relays (docs/performance.md)."""
        first, last = scope.first_chunk_at, scope.last_chunk_at
        if first is None or last is None:
            return
        span.set_attribute(GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, round(first - started, 6))
        self._instruments.genai_first_chunk.record(first - started, attributes)
        if scope.chunks > 1:
            mean_gap = (last - first) / (scope.chunks - 1)
            self._instruments.genai_chunk_gap.record(mean_gap, attributes)

    @contextmanager
    def search_call(self, *, provider: str, query_count: int) -> Iterator[SearchCallScope]:
        """A client span and the search metrics for one round of search queries."""
        scope = SearchCallScope()
        attributes: dict[str, AttributeValue] = {
            "fit_check.search.provider": provider,
            "fit_check.search.query_count": query_count,
        }

        def ended(traced: _Traced) -> None:
            traced.span.set_attribute("fit_check.search.result_count", scope.result_count)
            if traced.counted is not None:
                self._instruments.search_calls.add(
                    1, {"provider": provider, "status": traced.counted}
                )
                self._instruments.search_latency.record(traced.elapsed_s(), {"provider": provider})

        with self._traced(f"search {provider}", attributes, ended, SpanKind.CLIENT):
            yield scope

    # --- users' verdicts -----------------------------------------------------------------
    def feedback(
        self,
        *,
        session_id: str,
        traceparent: str | None,
        model: str,
        rating: str,
        comment: str | None,
    ) -> None:
        """A user's verdict on a session, recorded in that session's trace: a span under
        its first span with a ``gen_ai.evaluation.result`` event (the GenAI conventions'
        shape), a count by rating and model, and a log line with the session's trace id.
        The comment goes on the span only with content capture on."""
        parent = None
        if traceparent:
            parent = _PROPAGATOR.extract({"traceparent": traceparent})
        score = 1.0 if rating == "up" else 0.0
        evaluation: dict[str, AttributeValue] = {
            GEN_AI_EVALUATION_NAME: "user_feedback",
            GEN_AI_EVALUATION_SCORE_LABEL: rating,
            GEN_AI_EVALUATION_SCORE_VALUE: score,
        }
        if comment and self._capture_content:
            evaluation[GEN_AI_EVALUATION_EXPLANATION] = self._redact(comment)
        token = bind_session(session_id)
        try:
            with self._tracer.start_as_current_span(
                "fit_check.feedback",
                context=parent,
                attributes={
                    SESSION_ID_ATTRIBUTE: session_id,
                    GEN_AI_CONVERSATION_ID: session_id,
                    GEN_AI_REQUEST_MODEL: model,
                    **evaluation,
                },
            ) as span:
                span.add_event("gen_ai.evaluation.result", evaluation)
                self._instruments.feedback.add(1, {"rating": rating, "model": model})
                log.info(
                    "Feedback received",
                    extra={"rating": rating, "has_comment": comment is not None},
                )
        finally:
            context.detach(token)

    # --- circuit breakers ---------------------------------------------------------------
    @staticmethod
    def breaker_rejected(dependency: str, retry_after_s: float) -> None:
        """An open breaker refused a call: visible on the current span and in the log."""
        trace.get_current_span().add_event(
            "circuit_breaker.rejected",
            {"fit_check.dependency": dependency, "fit_check.retry_after_s": retry_after_s},
        )
        log.warning("Circuit breaker open, call rejected", extra={"dependency": dependency})

    @staticmethod
    def breaker_changed(dependency: str, old: str, new: str) -> None:
        trace.get_current_span().add_event(
            "circuit_breaker.state_change",
            {"fit_check.dependency": dependency, "fit_check.from": old, "fit_check.to": new},
        )
        log.warning(
            "Circuit breaker state changed",
            extra={"dependency": dependency, "from_state": old, "to_state": new},
        )

    def _record_content(
        self, span: Span, messages: Sequence[ChatMessage], parts: Sequence[str]
    ) -> None:
        """Prompt and completion as the GenAI conventions name them, masked, on the span
        and/or as its event, as the content capture mode says."""
        redact = self._redact
        content: dict[str, AttributeValue] = {
            GEN_AI_INPUT_MESSAGES: json.dumps(
                [
                    {"role": m.role, "parts": [{"type": "text", "content": redact(m.content)}]}
                    for m in messages
                ]
            ),
            GEN_AI_OUTPUT_MESSAGES: json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": redact("".join(parts))}],
                    }
                ]
            ),
        }
        if on_spans(self._content_capture):
            span.set_attributes(content)
        if on_events(self._content_capture):
            span.add_event("gen_ai.client.inference.operation.details", content)


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``; the scheme is case-insensitive (RFC 9110 11.1)."""
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        credentials.strip().encode(), token.encode()
    )
