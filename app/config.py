"""The one typed settings object of the service.

Every knob is an environment variable (see the README's configuration table). The
standard ``OTEL_*`` variables are read here too, so the composition root can hand
the telemetry layer plain values; the exporters still read their own fine-grained
``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout, protocol) themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from otel.content import ContentCapture


def _split_commas(value: object) -> object:
    """``"a, b"`` -> ``["a", "b"]``: the form env files and compose write lists in."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _split_names(value: object) -> object:
    """Names, compared without case (exporters, instrumentations)."""
    items = _split_commas(value)
    if isinstance(items, list):
        return [str(item).lower() for item in items]
    return items


#: A list given comma-separated in the environment.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
#: Exporter names (the spec's): an empty list means unset.
ExporterNames = Annotated[
    tuple[Literal["otlp", "console", "none"], ...] | None,
    NoDecode,
    BeforeValidator(_split_names),
    AfterValidator(lambda names: names or None),
]


class Settings(BaseSettings):
    """Service configuration, read from the environment (and an optional ``.env``)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # --- server -------------------------------------------------------------
    host: str = Field(default="127.0.0.1", validation_alias="HOST")
    port: int = Field(default=8000, ge=0, le=65535, validation_alias="PORT")
    allowed_origins: CommaList = Field(
        default_factory=lambda: ["http://localhost:3003"], validation_alias="ALLOWED_ORIGINS"
    )
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_format: Literal["text", "json"] = Field(default="text", validation_alias="LOG_FORMAT")
    #: Also append every line, as JSON whatever LOG_FORMAT says, to this file for the
    #: collector's file log receiver (compose's shared volume); rotated by size, two
    #: old files kept. With several workers each writes its own file (``name-w1.log``).
    log_file: Path | None = Field(default=None, validation_alias="FIT_CHECK_LOG_FILE")
    log_file_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=4096, validation_alias="FIT_CHECK_LOG_FILE_MAX_BYTES"
    )

    # --- providers ----------------------------------------------------------
    search_provider: Literal["offline", "google"] = Field(
        default="offline", validation_alias="FIT_CHECK_SEARCH_PROVIDER"
    )
    llm_provider: Literal["offline", "openai"] = Field(
        default="offline", validation_alias="FIT_CHECK_LLM_PROVIDER"
    )
    profile_path: Path | None = Field(default=None, validation_alias="FIT_CHECK_PROFILE")
    llm_model: str = Field(default="gpt-4o-mini", validation_alias="FIT_CHECK_LLM_MODEL")
    # gen_ai.provider.name of the `openai` provider's spans and metrics; unset: the GenAI
    # conventions' name for a known API's host, else the server's host and port.
    llm_provider_name: str | None = Field(
        default=None, validation_alias="FIT_CHECK_LLM_PROVIDER_NAME"
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", validation_alias="OPENAI_BASE_URL"
    )
    openai_api_key: str | None = Field(default=None, validation_alias="OPENAI_API_KEY", repr=False)
    google_search_url: str = Field(
        default="https://www.googleapis.com/customsearch/v1", validation_alias="GOOGLE_SEARCH_URL"
    )
    google_api_key: str | None = Field(default=None, validation_alias="GOOGLE_API_KEY", repr=False)
    google_cse_id: str | None = Field(default=None, validation_alias="GOOGLE_CSE_ID")
    search_queries: int = Field(default=3, ge=1, le=10, validation_alias="FIT_CHECK_SEARCH_QUERIES")

    # --- demo and test knobs --------------------------------------------------
    latency_ms: int = Field(default=0, ge=0, le=60_000, validation_alias="FIT_CHECK_LATENCY_MS")
    fault_rate_llm: float = Field(
        default=0.0, ge=0.0, le=1.0, validation_alias="FIT_CHECK_FAULT_RATE_LLM"
    )
    fault_rate_search: float = Field(
        default=0.0, ge=0.0, le=1.0, validation_alias="FIT_CHECK_FAULT_RATE_SEARCH"
    )
    fault_seed: int | None = Field(default=None, validation_alias="FIT_CHECK_FAULT_SEED")

    # --- processes ----------------------------------------------------------------------
    # Worker processes on one socket (`fit-check serve --workers N`); WEB_CONCURRENCY too.
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=AliasChoices("FIT_CHECK_WORKERS", "WEB_CONCURRENCY"),
    )

    # --- resilience -----------------------------------------------------------
    request_timeout_s: float = Field(
        default=120.0, gt=0, validation_alias="FIT_CHECK_REQUEST_TIMEOUT_S"
    )
    # A search call's budget, and each HTTP connection's to any provider.
    provider_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="FIT_CHECK_PROVIDER_TIMEOUT_S"
    )
    provider_connect_timeout_s: float = Field(
        default=10.0, gt=0, validation_alias="FIT_CHECK_PROVIDER_CONNECT_TIMEOUT_S"
    )
    # A streamed LLM answer: its first chunk (the model reads the prompt first: seconds on
    # a local model), the gap between chunks, and the whole answer, which only a broken
    # provider reaches (1,200 tokens at a slow but steady 10 a second).
    llm_first_chunk_timeout_s: float = Field(
        default=60.0, gt=0, validation_alias="FIT_CHECK_LLM_FIRST_CHUNK_TIMEOUT_S"
    )
    llm_idle_timeout_s: float = Field(
        default=20.0, gt=0, validation_alias="FIT_CHECK_LLM_IDLE_TIMEOUT_S"
    )
    llm_timeout_s: float = Field(default=120.0, gt=0, validation_alias="FIT_CHECK_LLM_TIMEOUT_S")
    breaker_failure_threshold: int = Field(
        default=5, ge=1, validation_alias="FIT_CHECK_BREAKER_FAILURE_THRESHOLD"
    )
    breaker_reset_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="FIT_CHECK_BREAKER_RESET_TIMEOUT_S"
    )
    max_concurrent_sessions: int = Field(
        default=100, ge=1, validation_alias="FIT_CHECK_MAX_CONCURRENT_SESSIONS"
    )
    max_body_bytes: int = Field(
        default=16_384, ge=1024, validation_alias="FIT_CHECK_MAX_BODY_BYTES"
    )
    # A body still unfinished this long after its headers gets 408 (a slow-body client
    # holds no connection for longer).
    body_timeout_s: float = Field(
        default=10.0, gt=0, le=300, validation_alias="FIT_CHECK_BODY_TIMEOUT_S"
    )
    # --- abuse ---------------------------------------------------------------------------
    # Sessions whose client left and may still come back (the resume window) are held in
    # their own, smaller allowance: past it the one waiting longest is dropped, so
    # abandoned requests never keep honest clients out of the streaming cap above.
    max_lingering_sessions: int = Field(
        default=10, ge=0, validation_alias="FIT_CHECK_MAX_LINGERING_SESSIONS"
    )
    # Sessions (streaming or lingering) one client address may hold at once.
    max_sessions_per_client: int = Field(
        default=10, ge=1, validation_alias="FIT_CHECK_MAX_SESSIONS_PER_CLIENT"
    )
    # Proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips:
    # addresses or networks, comma-separated, "*" for any); none by default.
    forwarded_allow_ips: CommaList = Field(
        default_factory=list, validation_alias="FIT_CHECK_FORWARDED_ALLOW_IPS"
    )
    # Reconnects (Last-Event-ID) one session serves; past it 429 RECONNECT_LIMIT. Each is
    # one server span in the session's trace, so this bounds a trace's size.
    max_reconnects: int = Field(default=50, ge=0, validation_alias="FIT_CHECK_MAX_RECONNECTS")
    # Host header names this instance answers to, besides loopback and HOST; anything else
    # gets 421 (DNS rebinding). "*" allows any (behind a proxy that checks it).
    allowed_hosts: CommaList = Field(
        default_factory=list, validation_alias="FIT_CHECK_ALLOWED_HOSTS"
    )
    # --- what an LLM may send ----------------------------------------------------------------
    # Characters accepted of one LLM answer; past it the call ends as truncated (finish
    # reason "length") and the provider's stream is closed, so nothing more is paid for.
    llm_max_answer_chars: int = Field(
        default=32_768, ge=256, le=1_048_576, validation_alias="FIT_CHECK_LLM_MAX_ANSWER_CHARS"
    )
    # Bytes of frames a session may hold that its reader has not been sent yet: past it
    # the pipeline waits for the reader (backpressure), and with nobody reading it pauses.
    send_buffer_bytes: int = Field(
        default=262_144, ge=16_384, validation_alias="FIT_CHECK_SEND_BUFFER_BYTES"
    )
    # A reader that takes nothing for this long while frames wait for it ends its session
    # with SLOW_READER (and a send blocked this long closes its connection).
    slow_reader_s: float = Field(
        default=15.0, gt=0, le=600, validation_alias="FIT_CHECK_SLOW_READER_S"
    )
    sse_ping_s: float = Field(default=15.0, gt=0, validation_alias="FIT_CHECK_SSE_PING_S")
    # --- behind browsers and load balancers -------------------------------------------------
    # The `retry:` hint: how long an EventSource waits before it reconnects.
    sse_retry_ms: int = Field(
        default=2000, ge=100, le=60_000, validation_alias="FIT_CHECK_SSE_RETRY_MS"
    )
    # How long a session whose client went away keeps running (and its result kept) for
    # the client to come back with Last-Event-ID: several retries at the hint above.
    resume_window_s: float = Field(
        default=10.0, ge=0, le=600, validation_alias="FIT_CHECK_RESUME_WINDOW_S"
    )
    # --- what LLM calls cost -----------------------------------------------------------------
    # A price table (JSON: {"as_of": ..., "models": {name: {"input", "cached_input",
    # "output"}}}, US dollars per million tokens) replacing the shipped one.
    prices_file: Path | None = Field(default=None, validation_alias="FIT_CHECK_PRICES_FILE")
    # The spend guard: past this many US dollars of LLM calls in the current clock hour, new
    # streams get 429 BUDGET_EXCEEDED (streams in flight finish). Unset: no guard.
    budget_usd_per_hour: float | None = Field(
        default=None, gt=0, validation_alias="FIT_CHECK_BUDGET_USD_PER_HOUR"
    )
    # --- users' verdicts (POST /api/fit-check/feedback) ------------------------------------
    # How long after its session a verdict is accepted, and how many verdicts one client
    # address may post a minute.
    feedback_window_s: int = Field(
        default=3600, ge=60, le=7 * 86400, validation_alias="FIT_CHECK_FEEDBACK_WINDOW_S"
    )
    feedback_per_client_per_minute: int = Field(
        default=20, ge=1, validation_alias="FIT_CHECK_FEEDBACK_PER_CLIENT_PER_MINUTE"
    )
    # --- beyond one instance (a shared session log in Redis) -------------------------------
    # Set: every session's frames also go to a Redis Stream, so a reconnect on any replica
    # reads on; the global cap below becomes possible. Unset: sessions live in this
    # instance's memory only (the embedded default).
    redis_url: str | None = Field(default=None, validation_alias="FIT_CHECK_REDIS_URL", repr=False)
    # Every key this service writes starts with it (several deployments on one Redis).
    redis_prefix: str = Field(default="fit-check:", validation_alias="FIT_CHECK_REDIS_PREFIX")
    # Each Redis call's bound: a slow or paused Redis costs a stream at most this per call.
    redis_timeout_ms: int = Field(
        default=250, ge=10, le=10_000, validation_alias="FIT_CHECK_REDIS_TIMEOUT_MS"
    )
    # Redis unreachable: "open" admits new streams on this instance's own cap (a stream in
    # flight never depends on Redis either way); "closed" refuses them with 503.
    redis_failure_mode: Literal["open", "closed"] = Field(
        default="open", validation_alias="FIT_CHECK_REDIS_FAILURE_MODE"
    )
    # Streaming sessions across every replica that shares the Redis; unset: no global cap.
    global_max_sessions: int | None = Field(
        default=None, ge=1, validation_alias="FIT_CHECK_GLOBAL_MAX_SESSIONS"
    )
    # A producing replica renews its lease this often (a third of it); a reader that finds it
    # expired with no terminal event ends its stream with INTERRUPTED, and a crashed
    # replica's global slots come back after it.
    producer_lease_s: float = Field(
        default=3.0, ge=0.5, le=60, validation_alias="FIT_CHECK_PRODUCER_LEASE_S"
    )
    replay_buffer_bytes: int = Field(
        default=1_048_576, ge=4096, validation_alias="FIT_CHECK_REPLAY_BUFFER_BYTES"
    )
    # On SIGTERM: how long streams in flight may finish before they are ended. Shutdown
    # takes at most this plus 5 s, inside Kubernetes' default 30 s termination grace.
    shutdown_grace_s: float = Field(
        default=20.0, ge=0, le=3600, validation_alias="FIT_CHECK_SHUTDOWN_GRACE_S"
    )
    max_header_bytes: int = Field(
        default=32_768, ge=1024, le=1_048_576, validation_alias="FIT_CHECK_MAX_HEADER_BYTES"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, le=300, validation_alias="FIT_CHECK_HEADER_TIMEOUT_S"
    )

    # --- the demo page's links ---------------------------------------------------------
    jaeger_ui_url: str = Field(
        default="http://localhost:16686", validation_alias="FIT_CHECK_JAEGER_UI_URL"
    )
    grafana_url: str = Field(
        default="http://localhost:3000", validation_alias="FIT_CHECK_GRAFANA_URL"
    )
    # VictoriaLogs, whose web UI (vmui) the demo page links a session's log lines to.
    logs_ui_url: str = Field(
        default="http://localhost:9428", validation_alias="FIT_CHECK_LOGS_UI_URL"
    )
    # Jaeger's query API, for `fit-check trace` and the service's own /trace/{id} page.
    jaeger_url: str = Field(
        default="http://localhost:16686", validation_alias="FIT_CHECK_JAEGER_URL"
    )
    # With no trace back-end (no OTLP exporter), the spans of this many recent traces are
    # kept in memory, within this many bytes (estimated), for the /trace/{id} page and the
    # demo page's trace links; the trace that received a span longest ago goes first.
    # 0 keeps none.
    recent_traces: int = Field(
        default=50, ge=0, le=10_000, validation_alias="FIT_CHECK_RECENT_TRACES"
    )
    recent_traces_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=65_536,
        le=1024 * 1024 * 1024,
        validation_alias="FIT_CHECK_RECENT_TRACES_BYTES",
    )

    # --- telemetry --------------------------------------------------------------
    environment: str = Field(default="local", validation_alias="FIT_CHECK_ENVIRONMENT")
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    otel_service_name: str = Field(default="fit-check", validation_alias="OTEL_SERVICE_NAME")
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otlp_metrics_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
    )
    # Comma lists of otlp, console, none (the spec's names); unset: otlp when an endpoint
    # is configured, else nothing (otel/exporters.py says why).
    traces_exporters: ExporterNames = Field(default=None, validation_alias="OTEL_TRACES_EXPORTER")
    metrics_exporters: ExporterNames = Field(default=None, validation_alias="OTEL_METRICS_EXPORTER")
    # Read by the SDK itself; here only so that the start-up line can say which is in use.
    traces_sampler: str = Field(
        default="parentbased_always_on", validation_alias="OTEL_TRACES_SAMPLER"
    )
    traces_sampler_arg: str | None = Field(default=None, validation_alias="OTEL_TRACES_SAMPLER_ARG")
    # Which histogram values keep an exemplar (a trace id beside a bucket): the SDK's and
    # otel.histograms' choice alike.
    metrics_exemplar_filter: Literal["trace_based", "always_on", "always_off"] = Field(
        default="trace_based", validation_alias="OTEL_METRICS_EXEMPLAR_FILTER"
    )
    otlp_protocol: Literal["grpc", "http/protobuf"] = Field(
        default="http/protobuf", validation_alias="OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    # OpenTelemetry Python's own list of instrumentations not to load. "httpx" drops the
    # outbound HTTP client spans (otel.http_client) and the traceparent on provider
    # requests (docs/performance.md has what they cost). The LLM and search spans stay;
    # other names are instrumentations this service does not use, except the server's,
    # which is refused below.
    disabled_instrumentations: Annotated[
        frozenset[str], NoDecode, BeforeValidator(_split_names)
    ] = Field(default=frozenset(), validation_alias="OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
    # The SDK's default batch is 512 spans: encoding one holds the GIL long enough to
    # triple the p99 of streams in flight (docs/performance.md). The queue size is read
    # here too, so that a small queue also caps the batch instead of failing the start.
    span_batch_size: int = Field(
        default=64, ge=1, validation_alias="OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
    )
    span_queue_size: int = Field(default=2048, ge=1, validation_alias="OTEL_BSP_MAX_QUEUE_SIZE")
    # "fastotel" (the optional extra) sends spans over OTLP/HTTP from native code, a quarter
    # less telemetry CPU per stream, but a span it drops is not logged (docs/performance.md).
    span_processor: Literal["batch", "fastotel"] = Field(
        default="batch", validation_alias="FIT_CHECK_SPAN_PROCESSOR"
    )
    trust_incoming_trace: bool = Field(
        default=False, validation_alias="FIT_CHECK_TRUST_TRACEPARENT"
    )
    metrics_token: str | None = Field(
        default=None, validation_alias="FIT_CHECK_METRICS_TOKEN", repr=False
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, validation_alias="FIT_CHECK_METRICS_PORT"
    )
    metrics_host: str = Field(default="127.0.0.1", validation_alias="FIT_CHECK_METRICS_HOST")
    # The older switch: true is SPAN_ONLY (below wins when both are set).
    capture_content: bool = Field(default=False, validation_alias="FIT_CHECK_CAPTURE_CONTENT")
    # The GenAI conventions' variable: NO_CONTENT, SPAN_ONLY, EVENT_ONLY or SPAN_AND_EVENT
    # (and true/false, as older instrumentations read it). Unset: NO_CONTENT.
    capture_message_content: ContentCapture | None = Field(
        default=None, validation_alias="OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
    )
    # A regular expression masked ("[redacted]") in captured content, besides e-mail
    # addresses and phone numbers, which always are.
    content_redact_pattern: str | None = Field(
        default=None, validation_alias="FIT_CHECK_CONTENT_REDACT_PATTERN"
    )

    @field_validator("capture_message_content", mode="before")
    @classmethod
    def _content_mode(cls, value: object) -> object:
        if isinstance(value, str):
            upper = value.strip().upper()
            return {"TRUE": "SPAN_ONLY", "FALSE": "NO_CONTENT", "": None}.get(upper, upper)
        return value

    @field_validator("content_redact_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @property
    def content_capture(self) -> ContentCapture:
        if self.capture_message_content is not None:
            return self.capture_message_content
        return "SPAN_ONLY" if self.capture_content else "NO_CONTENT"

    @model_validator(mode="after")
    def _one_metrics_port_per_process(self) -> Settings:
        """Every worker would try to bind the same metrics port."""
        if self.workers > 1 and self.metrics_port is not None:
            raise ValueError(
                "FIT_CHECK_METRICS_PORT cannot be shared by several workers: push metrics to "
                "a collector (OTEL_EXPORTER_OTLP_ENDPOINT) instead"
            )
        return self

    @model_validator(mode="after")
    def _global_cap_needs_redis(self) -> Settings:
        """A cap across replicas is kept in the shared store: without one it would silently
        be a per-instance cap."""
        if self.global_max_sessions is not None and not self.redis_url:
            raise ValueError("FIT_CHECK_GLOBAL_MAX_SESSIONS needs FIT_CHECK_REDIS_URL")
        return self

    @model_validator(mode="after")
    def _google_needs_its_credentials(self) -> Settings:
        """Refused at start: the Google API cannot answer without them, and finding out on
        the first user's request is too late."""
        if self.search_provider == "google" and not (self.google_api_key and self.google_cse_id):
            raise ValueError(
                "FIT_CHECK_SEARCH_PROVIDER=google needs GOOGLE_API_KEY and GOOGLE_CSE_ID"
            )
        return self

    @field_validator("disabled_instrumentations")
    @classmethod
    def _server_span_stays(cls, names: frozenset[str]) -> frozenset[str]:
        """The server span cannot go."""
        server = names & {"fastapi", "asgi", "starlette"}
        if server:
            raise ValueError(
                f"{', '.join(sorted(server))} cannot be disabled: the server span is each "
                "request's span, which phases, logs and exemplars hang from "
                "(OTEL_SDK_DISABLED=true turns all telemetry off)"
            )
        return names

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
