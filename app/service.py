"""The service's long-lived parts, built once per app and shared by the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from app.config import Settings
from app.models import FeedbackRequest, FitCheckRequest
from app.pipeline.analysis import load_profile
from app.pipeline.budget import SpendBudget
from app.pipeline.event_ids import LastEventId, new_stream_key, parse_last_event_id
from app.pipeline.events import PHASES
from app.pipeline.feedback import FeedbackLedger, RatedSession, Verdict
from app.pipeline.gateway import ProviderGateway
from app.pipeline.live_sessions import LiveSessions, SessionLimitReached
from app.pipeline.phases import FitCheckPipeline
from app.pipeline.session import SessionRun
from app.providers.factory import Providers
from app.providers.prices import PriceTable
from app.rejections import REJECTION_REASONS, RejectionReason
from app.resilience.breaker import STATE_VALUES, BreakerState, CircuitBreaker
from app.resilience.stream_timeouts import StreamLimits
from app.store.redis_log import SessionStore, StoredSession, StoreUnavailable
from otel.facade import ScrapePolicy, Telemetry

log = logging.getLogger("fit_check.service")

#: Why a reconnect is not served (``FitCheckService.resume``).
Resume = Literal["gone", "future", "limit", "store_unavailable"]
#: How often the shared store is probed, so health recovers with no traffic.
STORE_PROBE_S = 2.0


class SessionStoreUnavailable(Exception):
    """503: the shared store cannot be reached and FIT_CHECK_REDIS_FAILURE_MODE=closed."""


@dataclass(frozen=True, slots=True)
class RemoteSession:
    """A session another replica runs, readable here from the shared store."""

    key: str
    stored: StoredSession


class SessionStoreHealth(BaseModel):
    backend: Literal["memory", "redis"] = Field(
        description="redis: sessions are shared by replicas (FIT_CHECK_REDIS_URL)."
    )
    status: Literal["ok", "unavailable"] = Field(
        description="unavailable: streams still reach their own clients, but a reconnect on "
        "another replica cannot read on, and the cap across replicas is not enforced."
    )


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"] = Field(
        description="degraded: a provider's circuit breaker is open, or the shared session "
        "store is unavailable; unhealthy: every provider's breaker is open."
    )
    service: Literal["fit-check"] = "fit-check"
    agent_ready: bool = Field(description="False once the instance drains: no new streams.")
    active_sessions: int
    circuit_breakers: dict[str, BreakerState]
    session_store: SessionStoreHealth
    timestamp: float


#: After the grace period, how long the streams still running get to take their
#: ``SHUTTING_DOWN`` event before the server closes what is left.
FAREWELL_S = 1.0


@dataclass(slots=True)
class FitCheckService:
    settings: Settings
    telemetry: Telemetry
    providers: Providers
    breakers: dict[str, CircuitBreaker]
    sessions: LiveSessions[SessionRun]
    pipeline: FitCheckPipeline
    store: SessionStore | None = None
    budget: SpendBudget = field(default_factory=lambda: SpendBudget(None))
    feedback: FeedbackLedger = field(
        default_factory=lambda: FeedbackLedger(window_s=3600, per_client_per_minute=20)
    )
    draining: bool = field(default=False)

    @classmethod
    def build(
        cls, settings: Settings, telemetry: Telemetry, providers: Providers
    ) -> FitCheckService:
        breakers = {
            name: CircuitBreaker(
                name,
                failure_threshold=settings.breaker_failure_threshold,
                reset_timeout_s=settings.breaker_reset_timeout_s,
            )
            for name in ("search", "llm")
        }
        store = (
            None
            if settings.redis_url is None
            else SessionStore(
                settings.redis_url,
                prefix=settings.redis_prefix,
                timeout_ms=settings.redis_timeout_ms,
                lease_s=settings.producer_lease_s,
                resume_window_s=settings.resume_window_s,
                telemetry=telemetry,
                feedback_window_s=settings.feedback_window_s,
            )
        )
        budget = SpendBudget(settings.budget_usd_per_hour, store)
        gateway = ProviderGateway(
            search=providers.search,
            llm=providers.llm,
            breakers=breakers,
            telemetry=telemetry,
            timeout_s=settings.provider_timeout_s,
            llm_limits=StreamLimits(
                first_chunk_s=settings.llm_first_chunk_timeout_s,
                idle_s=settings.llm_idle_timeout_s,
                overall_s=settings.llm_timeout_s,
            ),
            max_answer_chars=settings.llm_max_answer_chars,
            prices=PriceTable.load(settings.prices_file),
            on_spend=budget.spent,
        )
        pipeline = FitCheckPipeline(
            gateway=gateway,
            profile=load_profile(settings.profile_path),
            telemetry=telemetry,
            search_queries=settings.search_queries,
        )
        service = cls(
            settings=settings,
            telemetry=telemetry,
            providers=providers,
            breakers=breakers,
            sessions=LiveSessions(
                settings.max_concurrent_sessions,
                max_lingering=settings.max_lingering_sessions,
                per_client=settings.max_sessions_per_client,
            ),
            pipeline=pipeline,
            store=store,
            budget=budget,
            feedback=FeedbackLedger(
                window_s=settings.feedback_window_s,
                per_client_per_minute=settings.feedback_per_client_per_minute,
                store=store,
            ),
        )
        telemetry.prepare(
            phases=PHASES,
            llm_model=providers.llm.model,
            search_provider=providers.search.name,
            rejection_reasons=REJECTION_REASONS,
            active_sessions=lambda: service.sessions.active,
            breaker_states=lambda: {n: STATE_VALUES[b.state] for n, b in breakers.items()},
            scrapes=ScrapePolicy(
                workers=settings.workers,
                metrics_port=settings.metrics_port,
                token=settings.metrics_token,
            ),
        )
        return service

    def reject(self, reason: RejectionReason) -> None:
        """Count a request refused before any work started (a closed set of reasons: a
        misspelt one is a type error here, not a new label in the metrics)."""
        self.telemetry.rejected(reason)

    # --- sessions -----------------------------------------------------------------------
    async def open_session(self, request: FitCheckRequest, client: str = "") -> SessionRun:
        """Admit a session and prepare its run. Raises BudgetExceeded past this hour's LLM
        budget, SessionLimitReached past a limit (this instance's, a client's, or the one
        across replicas) and SessionStoreUnavailable when the store is down and the
        failure mode is closed."""
        settings = self.settings
        store = self.store
        global_limit = settings.global_max_sessions
        await self.budget.check()
        run = SessionRun(
            key=new_stream_key(),
            session_id=request.session_id or str(uuid.uuid4()),
            query=request.query,
            include_thoughts=request.include_thoughts,
            pipeline=self.pipeline,
            telemetry=self.telemetry,
            timeout_s=settings.request_timeout_s,
            resume_window_s=settings.resume_window_s,
            replay_bytes=settings.replay_buffer_bytes,
            retry_ms=settings.sse_retry_ms,
            on_closed=self._closed,
            send_buffer_bytes=settings.send_buffer_bytes,
            slow_reader_s=settings.slow_reader_s,
            client=client,
            store=store,
            capped=global_limit is not None,
        )
        self.sessions.add(run)
        if store is None:
            return run
        closed = settings.redis_failure_mode == "closed"
        if global_limit is None:
            if closed and not store.available:
                self.sessions.withdraw(run)
                raise SessionStoreUnavailable
            return run
        try:
            taken = await store.admit(run.key, global_limit)
        except StoreUnavailable:
            if closed:
                self.sessions.withdraw(run)
                raise SessionStoreUnavailable from None
            # Open: this instance's own cap still bounds what it spends.
            return run
        if taken is not None:
            self.sessions.withdraw(run)
            raise SessionLimitReached(
                f"{taken} sessions are streaming across all instances (the limit is "
                f"{global_limit})",
                self.sessions.retry_after(),
            )
        return run

    def _closed(self, run: SessionRun) -> None:
        self.sessions.discard(run)
        self.feedback.remember(run.key, run.session_id, run.traceparent)

    async def record_feedback(self, request: FeedbackRequest, client: str) -> Verdict:
        """A user's verdict on the session ``request.stream_key`` names, into its trace."""
        run = self.sessions.get(request.stream_key)
        live = (
            None
            if run is None
            else RatedSession(run.session_id, run.traceparent, expires_at=float("inf"))
        )
        verdict, session = await self.feedback.claim(request.stream_key, client, live)
        if session is not None:
            self.telemetry.feedback(
                session_id=session.session_id,
                traceparent=session.traceparent,
                model=self.providers.llm.model,
                rating=request.rating,
                comment=request.comment,
            )
        return verdict

    async def resume(self, last: LastEventId) -> SessionRun | RemoteSession | Resume:
        """Take a reconnect (``Last-Event-ID``): the live session it reads on from (here, or
        from the shared store), counted as one of the session's reconnects, or why not:
        ``gone`` (answer 204: stop; a session whose frames the reader needs were dropped
        is abandoned, since nobody can read it any more), ``future`` (400: no such event was sent),
        ``limit`` (429: this session has served ``FIT_CHECK_MAX_RECONNECTS`` reconnects) or
        ``store_unavailable`` (503: it may be elsewhere, and the store cannot say)."""
        if last.terminal:
            return "gone"
        run = self.sessions.get(last.key)
        if run is None:
            return await self._remote(last)
        verdict = run.resume_verdict(last.seq)
        if verdict == "gone":
            run.abandon()  # the frames it needs are dropped: nobody can read it any more
            return verdict
        if verdict == "future":
            return verdict  # a forged or mistaken id: the session is not harmed
        if run.reconnects >= self.settings.max_reconnects:
            return "limit"
        run.reconnects += 1
        return run

    async def _remote(self, last: LastEventId) -> RemoteSession | Resume:
        if self.store is None:
            return "gone"
        try:
            stored = await self.store.describe(last.key, reconnect=True)
        except StoreUnavailable:
            return "store_unavailable"
        if stored is None or not _readable(stored, last.seq):
            return "gone"
        if stored.reconnects > self.settings.max_reconnects:
            return "limit"
        return RemoteSession(last.key, stored)

    async def resume_trace_parent(self, last_event_id: str) -> str | None:
        """For the tracing middleware: the span a reconnect's server span is a child of
        (none for a reconnect that will be refused: its span is not the session's)."""
        last = parse_last_event_id(last_event_id)
        if last is None or last.terminal:
            return None
        run = self.sessions.get(last.key)
        if run is None and self.store is not None:
            try:
                stored = await self.store.describe(last.key)
            except StoreUnavailable:
                return None
            if stored is None or not _readable(stored, last.seq):
                return None
            return stored.traceparent
        if (
            run is None
            or run.trace is None
            or run.resume_verdict(last.seq) != "ok"
            or run.reconnects >= self.settings.max_reconnects
        ):
            return None
        return run.trace.traceparent

    # --- the shared store -----------------------------------------------------------------
    async def watch_store(self) -> None:
        """Probe the store until cancelled, so health follows it with no traffic (and says
        at start-up whether it is there)."""
        store = self.store
        if store is None:
            return
        if not await store.ping():
            log.warning("Session store unreachable at start-up; sessions stay on this instance")
        while True:
            await asyncio.sleep(STORE_PROBE_S)
            await store.ping()

    async def close_store(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.aclose()

    # --- draining -------------------------------------------------------------------------
    async def drain(self) -> None:
        """Refuse new streams, let running ones finish for the grace period, then end the
        rest with ``SHUTTING_DOWN``. Returns when no session is left, or at the deadline."""
        if self.draining:
            return
        self.draining = True
        grace_s = self.settings.shutdown_grace_s
        started = time.monotonic()
        log.info(
            "Draining: refusing new streams",
            extra={"active_sessions": self.sessions.active, "grace_s": grace_s},
        )
        if not await self.sessions.wait_empty(grace_s):
            left = self.sessions.all()
            log.warning("Grace period over; ending the streams left", extra={"streams": len(left)})
            for run in left:
                run.shut_down()
            await self.sessions.wait_empty(FAREWELL_S)
        log.info(
            "Drained",
            extra={
                "active_sessions": self.sessions.active,
                "duration_ms": int((time.monotonic() - started) * 1000),
            },
        )

    # --- health ---------------------------------------------------------------------------
    def health(self) -> HealthResponse:
        states = {name: breaker.state for name, breaker in self.breakers.items()}
        open_breakers = sum(state == BreakerState.OPEN for state in states.values())
        store = self.store
        store_health = SessionStoreHealth(
            backend="memory" if store is None else "redis",
            status="ok" if store is None or store.available else "unavailable",
        )
        return HealthResponse(
            # Unhealthy: every provider is refused, no analysis can succeed right now.
            status=(
                "unhealthy"
                if open_breakers == len(states)
                else "degraded"
                if open_breakers or store_health.status != "ok"
                else "healthy"
            ),
            agent_ready=not self.draining,
            active_sessions=self.sessions.active,
            circuit_breakers=states,
            session_store=store_health,
            timestamp=time.time(),
        )


def _readable(stored: StoredSession, seq: int) -> bool:
    """Whether a reconnect whose last event was ``seq`` can read on from the store: the
    stream has not ended for it, and the frames after it are still held."""
    if stored.terminal_seq is not None and seq >= stored.terminal_seq:
        return False
    return seq + 1 >= stored.first_seq
