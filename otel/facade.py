"""The telemetry facade: the only telemetry the business code sees.

The pipeline writes ``with telemetry.phase("deep_research"):`` and nothing else; spans,
metrics and log lines for that phase follow from it. The facade uses only the OpenTelemetry
API, so it works the same with real SDK providers, in-memory test providers, or the no-op
providers of ``OTEL_SDK_DISABLED=true``. It never raises into the caller on its own account
and re-raises the caller's exceptions unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context, trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from otel.context import SESSION_ID_ATTRIBUTE, bind_session
from otel.metrics import Instruments

log = logging.getLogger("fit_check.telemetry")

# GenAI semantic convention names (the semconv package marks these incubating; kept as
# constants here so a rename is one line).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
OUTCOME_ATTRIBUTE = "fit_check.outcome"
CANCEL_REASON_ATTRIBUTE = "fit_check.cancel_reason"
RESUMED_AFTER_ATTRIBUTE = "fit_check.resumed_after"
PHASE_ATTRIBUTE = "fit_check.phase"


@dataclass(slots=True)
class RequestScope:
    """What the facade needs to know about one request while it runs."""

    session_id: str
    started: float
    outcome: str = "success"
    first_event_seen: bool = False
    #: Why a ``cancelled`` request was cancelled: ``client_gone`` or ``shutdown``.
    cancel_reason: str | None = None
    #: When the last reader's stream ended, if nobody is reading: a cancelled request's
    #: duration ends there, not when its resume window ran out.
    stream_ended: float | None = None


@dataclass(slots=True)
class PhaseScope:
    name: str
    started: float

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


@dataclass(slots=True)
class LLMCallScope:
    """Filled in by the caller as the stream ends."""

    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    #: Recorded only when content capture is on (FIT_CHECK_CAPTURE_CONTENT).
    input_messages: Sequence[Any] | None = None  # objects with .role and .content
    output_parts: list[str] | None = None


@dataclass(slots=True)
class SearchCallScope:
    result_count: int = 0
    extra: dict[str, object] = field(default_factory=dict)


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
    ) -> None:
        self._capture_content = capture_content
        self._tracer = tracer
        self._instruments = Instruments(meter, service_version=service_version)
        self._render_metrics = render_metrics
        self._status_attrs = {
            s: {"status": s} for s in ("success", "error", "timeout", "cancelled")
        }

    # --- wiring --------------------------------------------------------------------
    def prepare(
        self,
        *,
        phases: tuple[str, ...],
        llm_model: str,
        search_provider: str,
        rejection_reasons: tuple[str, ...],
        active_sessions: Callable[[], int],
        breaker_states: Callable[[], Mapping[str, int]],
    ) -> None:
        """Zero-fill the closed label sets and watch the service's own state."""
        self._instruments.zero_fill(
            phases=phases,
            llm_models=(llm_model,),
            search_providers=(search_provider,),
            rejection_reasons=rejection_reasons,
        )
        self._instruments.observe_state(
            active_sessions=active_sessions, breaker_states=breaker_states
        )

    def render_metrics(self, accept: str | None) -> tuple[bytes, str] | None:
        """The Prometheus exposition for ``/metrics``, or None when metrics are disabled."""
        return None if self._render_metrics is None else self._render_metrics(accept)

    # --- requests ----------------------------------------------------------------
    @staticmethod
    def trace_header() -> tuple[str, str] | None:
        """The current trace as (trace id, W3C ``traceresponse`` header), if one is recorded."""
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        trace_id = format(span_context.trace_id, "032x")
        header = f"00-{trace_id}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"
        return trace_id, header

    @contextmanager
    def request(self, session_id: str, *, query_length: int) -> Iterator[RequestScope]:
        """One streamed request: binds the session id, counts and times the outcome."""
        scope = RequestScope(session_id=session_id, started=time.perf_counter())
        token = bind_session(session_id)
        span = trace.get_current_span()
        span.set_attribute(SESSION_ID_ATTRIBUTE, session_id)
        log.info("Request started", extra={"query_length": query_length})
        try:
            yield scope
        except asyncio.CancelledError:
            scope.outcome = "cancelled"
            scope.cancel_reason = scope.cancel_reason or "client_gone"
            raise
        except BaseException:
            scope.outcome = "error"
            raise
        finally:
            ended = time.perf_counter()
            if scope.outcome == "cancelled" and scope.stream_ended is not None:
                ended = scope.stream_ended
            duration = ended - scope.started
            span.set_attribute(OUTCOME_ATTRIBUTE, scope.outcome)
            extra: dict[str, object] = {
                "status": scope.outcome,
                "duration_ms": int(duration * 1000),
            }
            if scope.outcome != "success":
                span.set_status(Status(StatusCode.ERROR, scope.outcome))
            if scope.outcome == "cancelled" and scope.cancel_reason:
                span.set_attribute(CANCEL_REASON_ATTRIBUTE, scope.cancel_reason)
                extra["reason"] = scope.cancel_reason
            self._instruments.requests.add(1, self._status_attrs[scope.outcome])
            self._instruments.request_duration.record(duration)
            log.info("Request completed", extra=extra)
            context.detach(token)

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

    def rejected(self, reason: str) -> None:
        """A request refused before any work started (load shedding, limits, bad input)."""
        self._instruments.rejected.add(1, {"reason": reason})

    def first_event(self, scope: RequestScope) -> None:
        """Record time to first event once per request (the first phase the client sees)."""
        if not scope.first_event_seen:
            scope.first_event_seen = True
            self._instruments.first_event.record(time.perf_counter() - scope.started)

    # --- phases ---------------------------------------------------------------------
    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseScope]:
        """A child span, a completion count, a duration and two log lines for one phase."""
        scope = PhaseScope(name=name, started=time.perf_counter())
        attrs = {PHASE_ATTRIBUTE: name}
        span = self._tracer.start_span(f"fit_check.phase {name}", attributes=attrs)
        status = "success"
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            log.info("Phase started", extra={"phase": name})
            try:
                yield scope
            except asyncio.CancelledError:
                status = "cancelled"
                span.set_status(Status(StatusCode.ERROR, "cancelled"))
                raise
            except BaseException as exc:
                status = "error"
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                duration = time.perf_counter() - scope.started
                if status != "cancelled":
                    self._instruments.phase_completions.add(1, {"phase": name, "status": status})
                    self._instruments.phase_duration.record(duration, {"phase": name})
                log.info(
                    "Phase completed",
                    extra={"phase": name, "status": status, "duration_ms": int(duration * 1000)},
                )

    # --- provider calls ---------------------------------------------------------------
    @contextmanager
    def llm_call(
        self, *, provider: str, model: str, operation: str = "chat"
    ) -> Iterator[LLMCallScope]:
        """A GenAI client span plus the spec's LLM metrics; no prompt text is recorded."""
        scope = LLMCallScope()
        started = time.perf_counter()
        attrs = {
            GEN_AI_OPERATION_NAME: operation,
            GEN_AI_PROVIDER_NAME: provider,
            GEN_AI_REQUEST_MODEL: model,
        }
        span = self._tracer.start_span(
            f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attrs
        )
        error_type: str | None = None
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield scope
            except asyncio.CancelledError:
                error_type = "cancelled"
                raise
            except BaseException as exc:
                error_type = type(exc).__qualname__
                span.record_exception(exc)
                raise
            finally:
                duration = time.perf_counter() - started
                self._finish_llm(span, scope, attrs, model, duration, error_type)

    def _finish_llm(
        self,
        span: trace.Span,
        scope: LLMCallScope,
        attrs: dict[str, str],
        model: str,
        duration: float,
        error_type: str | None,
    ) -> None:
        metric_attrs: dict[str, str] = dict(attrs)
        if scope.response_model:
            span.set_attribute(GEN_AI_RESPONSE_MODEL, scope.response_model)
            metric_attrs[GEN_AI_RESPONSE_MODEL] = scope.response_model
        if self._capture_content:
            self._record_content(span, scope)
        if scope.finish_reason:
            span.set_attribute(GEN_AI_FINISH_REASONS, (scope.finish_reason,))
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR, error_type))
            span.set_attribute(ERROR_TYPE, error_type)
            metric_attrs[ERROR_TYPE] = error_type
        if error_type != "cancelled":
            status = "success" if error_type is None else "error"
            self._instruments.llm_calls.add(1, {"model": model, "status": status})
            self._instruments.llm_latency.record(duration, {"model": model})
        self._instruments.genai_duration.record(duration, metric_attrs)
        usage = (
            ("input", GEN_AI_INPUT_TOKENS, scope.input_tokens),
            ("output", GEN_AI_OUTPUT_TOKENS, scope.output_tokens),
        )
        for token_type, attribute, count in usage:
            if count is not None:
                span.set_attribute(attribute, count)
                self._instruments.genai_tokens.record(
                    count, {**metric_attrs, GEN_AI_TOKEN_TYPE: token_type}
                )

    @staticmethod
    def _record_content(span: trace.Span, scope: LLMCallScope) -> None:
        """Prompt and completion as the GenAI conventions name them; opt-in, they may be PII."""
        if scope.input_messages is not None:
            messages = [
                {"role": m.role, "parts": [{"type": "text", "content": m.content}]}
                for m in scope.input_messages
            ]
            span.set_attribute(GEN_AI_INPUT_MESSAGES, json.dumps(messages))
        if scope.output_parts is not None:
            text = "".join(scope.output_parts)
            output = [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
            span.set_attribute(GEN_AI_OUTPUT_MESSAGES, json.dumps(output))

    @contextmanager
    def search_call(self, *, provider: str, query_count: int) -> Iterator[SearchCallScope]:
        """A client span and the search metrics for one round of search queries."""
        scope = SearchCallScope()
        started = time.perf_counter()
        span = self._tracer.start_span(
            f"search {provider}",
            kind=SpanKind.CLIENT,
            attributes={
                "fit_check.search.provider": provider,
                "fit_check.search.query_count": query_count,
            },
        )
        status = "success"
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield scope
            except asyncio.CancelledError:
                status = "cancelled"
                raise
            except BaseException as exc:
                status = "error"
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
                raise
            finally:
                span.set_attribute("fit_check.search.result_count", scope.result_count)
                if status != "cancelled":
                    self._instruments.search_calls.add(1, {"provider": provider, "status": status})
                    self._instruments.search_latency.record(
                        time.perf_counter() - started, {"provider": provider}
                    )

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
