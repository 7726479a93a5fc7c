"""Every instrument of the service, with the names, labels and buckets the spec fixes.

OTel names use dots and a unit; the Prometheus exporters (the service's own reader and
the collector's) turn ``fit_check.request.duration`` + ``s`` into
``fit_check_request_duration_seconds`` and add ``_total`` to counters, so both paths
expose the spec's names. ``session_id`` is never an attribute here.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:  # the SDK stays out of what business code loads
    from otel.histograms import LeanHistograms


#: The spec's request statuses, and the statuses of a phase or provider call (a cancelled
#: call records no metric: see ``otel.facade``).
RequestStatus = Literal["success", "error", "timeout", "cancelled"]
CallStatus = Literal["success", "error"]
REQUEST_STATUSES: tuple[RequestStatus, ...] = get_args(RequestStatus)
CALL_STATUSES: tuple[CallStatus, ...] = get_args(CallStatus)

REQUEST_DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600)
PHASE_DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60)
LLM_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30)
FIRST_EVENT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SEARCH_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
STORE_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
# From the OpenTelemetry GenAI semantic conventions.
GENAI_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
# From the GenAI conventions' advice for time per output chunk.
GENAI_CHUNK_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)
GENAI_TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)


class Totals:
    """A counter kept as plain totals, reported through an observable counter.

    A synchronous OTel counter pays the SDK's whole measurement path on every ``add``
    (attribute checks, the exemplar filter, a hashed lookup and a lock in each metric
    reader), a large share of the telemetry's cost per stream (docs/performance.md).
    Here an ``add`` is a dict update, and the SDK reads
    the totals when a reader collects: once per scrape or export, not once per request.
    The exported counter is the same (a monotonic cumulative sum, ``_total`` in
    Prometheus); counters carry no exemplars in this service, so none is lost.
    """

    def __init__(self, meter: Meter, name: str, *, description: str) -> None:
        self._totals: dict[frozenset[tuple[str, str]], float] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(name, callbacks=[self._observe], description=description)

    def add(self, amount: float, attributes: Mapping[str, str]) -> None:
        """Count ``amount`` (never negative) at exactly these attributes."""
        key = frozenset(attributes.items())
        with self._lock:
            self._totals[key] = self._totals.get(key, 0) + amount

    def _observe(self, _options: CallbackOptions) -> list[Observation]:
        with self._lock:
            totals = list(self._totals.items())
        return [Observation(total, dict(key)) for key, total in totals]


class Recorder(Protocol):
    """A histogram as the facade records into it: the SDK's or ``otel.histograms``'."""

    def record(
        self, amount: float, attributes: Mapping[str, AttributeValue] | None = None
    ) -> None: ...


class Instruments:
    """Creates the instruments once per meter; the facade records through them."""

    def __init__(
        self, meter: Meter, *, service_version: str, histograms: LeanHistograms | None = None
    ) -> None:
        """``histograms``: where the histograms are kept when the SDK is wired
        (``otel.wiring``); without it (no SDK), the meter's own histograms."""

        def histogram(
            name: str, unit: str, description: str, buckets: Sequence[float], exemplars: bool = True
        ) -> Recorder:
            if histograms is not None:
                return histograms.create(
                    name,
                    unit=unit,
                    description=description,
                    boundaries=buckets,
                    exemplars=exemplars,
                )
            return meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=buckets,
            )

        self.requests = Totals(
            meter, "fit_check.requests", description="Fit check requests by outcome"
        )
        self.request_duration = histogram(
            "fit_check.request.duration",
            "s",
            "Time from request start to the end of its stream",
            REQUEST_DURATION_BUCKETS,
        )
        self.first_event = histogram(
            "fit_check.time_to_first_event",
            "s",
            "Time from request start until the client got its first phase event",
            FIRST_EVENT_BUCKETS,
        )
        self.phase_completions = Totals(
            meter, "fit_check.phase.completions", description="Pipeline phases finished, by outcome"
        )
        self.phase_duration = histogram(
            "fit_check.phase.duration",
            "s",
            "Time spent in each pipeline phase",
            PHASE_DURATION_BUCKETS,
        )
        self.rejected = Totals(
            meter,
            "fit_check.rejected_requests",
            description="Requests refused before any work started, by reason",
        )
        self.llm_calls = Totals(
            meter, "fit_check.llm.calls", description="LLM calls by model and outcome"
        )
        self.llm_usage_missing = Totals(
            meter,
            "fit_check.llm.usage_missing",
            description="LLM calls that succeeded without the provider reporting token usage",
        )
        self.llm_cost = Totals(
            meter,
            "fit_check.llm.cost_usd",
            description="US dollars spent on LLM calls by model, from the price table",
        )
        self.llm_unpriced = Totals(
            meter,
            "fit_check.llm.unpriced_calls",
            description="LLM calls whose model has no price (their cost is unknown, not 0)",
        )
        self.feedback = Totals(
            meter,
            "fit_check.feedback",
            description="Users' verdicts on analyses, by rating and model",
        )
        self.llm_latency = histogram(
            "fit_check.llm.latency",
            "s",
            "LLM call latency, whole stream",
            LLM_LATENCY_BUCKETS,
        )
        self.search_calls = Totals(
            meter,
            "fit_check.search.calls",
            description="Search provider calls by provider and outcome",
        )
        self.search_latency = histogram(
            "fit_check.search.latency",
            "s",
            "Search provider call latency",
            SEARCH_LATENCY_BUCKETS,
        )
        self.genai_duration = histogram(
            "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration",
            GENAI_DURATION_BUCKETS,
        )
        self.genai_first_chunk = histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            "s",
            "Time from the request to the first chunk of a streamed answer",
            GENAI_DURATION_BUCKETS,
        )
        self.genai_chunk_gap = histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            "s",
            "Mean time between the chunks of a streamed answer, once per call",
            GENAI_CHUNK_BUCKETS,
        )
        self.genai_tokens = histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used per GenAI operation",
            GENAI_TOKEN_BUCKETS,
            exemplars=False,
        )
        self.store_operations = Totals(
            meter,
            "fit_check.session_store.operations",
            description="Shared session store (Redis) calls by operation and outcome",
        )
        self.store_duration = histogram(
            "fit_check.session_store.duration",
            "s",
            "Shared session store (Redis) call latency",
            STORE_LATENCY_BUCKETS,
        )
        self.streams_interrupted = Totals(
            meter,
            "fit_check.streams.interrupted",
            description="Resumed streams ended because their producing replica stopped",
        )
        build = {"version": service_version, "python_version": platform.python_version()}
        meter.create_observable_gauge(
            "fit_check_build_info",
            description="Build information (value is always 1)",
            callbacks=[lambda _options: [Observation(1, build)]],
        )
        self._meter = meter

    def zero_fill(
        self,
        *,
        phases: Iterable[str],
        llm_models: Iterable[str],
        search_providers: Iterable[str],
        rejection_reasons: Iterable[str],
    ) -> None:
        """Create every combination of the closed label sets at 0, so ratios have data early."""
        for status in REQUEST_STATUSES:
            self.requests.add(0, {"status": status})
        for reason in rejection_reasons:
            self.rejected.add(0, {"reason": reason})
        for phase in phases:
            for status in CALL_STATUSES:
                self.phase_completions.add(0, {"phase": phase, "status": status})
        for status in CALL_STATUSES:
            for model in llm_models:
                self.llm_calls.add(0, {"model": model, "status": status})
            for provider in search_providers:
                self.search_calls.add(0, {"provider": provider, "status": status})
        for model in llm_models:
            self.llm_usage_missing.add(0, {"model": model})
            self.llm_cost.add(0, {"model": model})
            for rating in ("up", "down"):
                self.feedback.add(0, {"rating": rating, "model": model})
            self.llm_unpriced.add(0, {"model": model})

    def observe_state(
        self, *, active_sessions: Callable[[], int], breaker_states: Callable[[], Mapping[str, int]]
    ) -> None:
        """Gauges read the service's own state at collection time, never a copy of it."""

        def sessions(_options: CallbackOptions) -> list[Observation]:
            return [Observation(active_sessions())]

        def breakers(_options: CallbackOptions) -> list[Observation]:
            return [
                Observation(value, {"service": name}) for name, value in breaker_states().items()
            ]

        self._meter.create_observable_gauge(
            "fit_check_active_sessions",
            description="Fit check sessions streaming right now",
            callbacks=[sessions],
        )
        self._meter.create_observable_gauge(
            "fit_check_circuit_breaker_state",
            description="Circuit breaker state (0=closed, 1=open, 2=half_open)",
            callbacks=[breakers],
        )
