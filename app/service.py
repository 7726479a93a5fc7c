"""The service's long-lived parts, built once per app and shared by the routes."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from app.api.schemas import FitCheckRequest, HealthResponse
from app.config import Settings
from app.pipeline.analysis import load_profile
from app.pipeline.events import PHASES
from app.pipeline.gateway import ProviderGateway
from app.pipeline.runner import FitCheckPipeline
from app.pipeline.session import SessionRun
from app.pipeline.sessions import SessionSlots
from app.providers.factory import Providers
from app.resilience.breaker import STATE_VALUES, BreakerState, CircuitBreaker
from otel.facade import Telemetry


@dataclass(slots=True)
class FitCheckService:
    settings: Settings
    telemetry: Telemetry
    providers: Providers
    breakers: dict[str, CircuitBreaker]
    slots: SessionSlots
    pipeline: FitCheckPipeline

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
        gateway = ProviderGateway(
            search=providers.search,
            llm=providers.llm,
            breakers=breakers,
            telemetry=telemetry,
            timeout_s=settings.provider_timeout_s,
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
            slots=SessionSlots(settings.max_concurrent_sessions),
            pipeline=pipeline,
        )
        telemetry.prepare(
            phases=PHASES,
            llm_model=providers.llm.model,
            search_provider=providers.search.name,
            active_sessions=lambda: service.slots.active,
            breaker_states=lambda: {n: STATE_VALUES[b.state] for n, b in breakers.items()},
        )
        return service

    def open_session(self, request: FitCheckRequest, trace_id: str | None) -> SessionRun:
        """Admit a session (raises SessionLimitReached past the limit) and prepare its run."""
        slot = self.slots.acquire()
        return SessionRun(
            session_id=request.session_id or str(uuid.uuid4()),
            query=request.query,
            include_thoughts=request.include_thoughts,
            pipeline=self.pipeline,
            telemetry=self.telemetry,
            slot=slot,
            timeout_s=self.settings.request_timeout_s,
            trace_id=trace_id,
        )

    def health(self) -> HealthResponse:
        states = {name: breaker.state.value for name, breaker in self.breakers.items()}
        degraded = any(state == BreakerState.OPEN for state in states.values())
        return HealthResponse(
            status="degraded" if degraded else "healthy",
            agent_ready=True,
            active_sessions=self.slots.active,
            circuit_breakers=states,  # type: ignore[arg-type]
            timestamp=time.time(),
        )
