"""Latency and fault injection around any provider, so demos and tests look like production."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator

from app.providers.base import (
    LLMProvider,
    LLMRequest,
    LLMUsage,
    ProviderError,
    SearchProvider,
    SearchResult,
)


class InjectedFault(ProviderError):
    """A failure made on purpose by FIT_CHECK_FAULT_RATE_*; counts like a real one."""


class _Faults:
    def __init__(self, kind: str, rate: float, latency_s: float, rng: random.Random) -> None:
        self._kind = kind
        self._rate = rate
        self._latency_s = latency_s
        self._rng = rng

    async def before_call(self) -> None:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        if self._rate and self._rng.random() < self._rate:
            raise InjectedFault(f"injected {self._kind} fault")


class FaultySearch:
    """Wraps a SearchProvider: sleeps, then fails a seeded share of calls."""

    def __init__(self, inner: SearchProvider, faults: _Faults) -> None:
        self._inner = inner
        self._faults = faults
        self.name = inner.name

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        await self._faults.before_call()
        return await self._inner.search(query, limit=limit)

    async def aclose(self) -> None:
        await self._inner.aclose()


class FaultyLLM:
    """Wraps an LLMProvider: sleeps before the first chunk, then fails a seeded share of calls."""

    def __init__(self, inner: LLMProvider, faults: _Faults) -> None:
        self._inner = inner
        self._faults = faults
        self.name = inner.name
        self.model = inner.model

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncGenerator[str, None]:
        await self._faults.before_call()
        async for chunk in self._inner.stream(request, usage):
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def with_faults(
    search: SearchProvider,
    llm: LLMProvider,
    *,
    latency_ms: int,
    fault_rate_search: float,
    fault_rate_llm: float,
    seed: int | None,
) -> tuple[SearchProvider, LLMProvider]:
    """Wrap the providers only when a knob is set, so the default path has no extra layer."""
    rng = random.Random(seed)
    latency_s = latency_ms / 1000
    if latency_s or fault_rate_search:
        search = FaultySearch(search, _Faults("search", fault_rate_search, latency_s, rng))
    if latency_s or fault_rate_llm:
        llm = FaultyLLM(llm, _Faults("llm", fault_rate_llm, latency_s, rng))
    return search, llm
