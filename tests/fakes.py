"""Providers that count calls and fail on command, for tests of what the pipeline does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from app.providers.base import LLMRequest, LLMUsage, ProviderError, SearchResult
from app.providers.factory import Providers
from app.providers.offline import OfflineAnalyzer, OfflineSearch


class CountingSearch:
    name = "offline"

    def __init__(self, *, fail: bool = False, delay_s: float = 0.0) -> None:
        self.inner = OfflineSearch()
        self.fail = fail
        self.delay_s = delay_s
        self.calls = 0

    async def search(self, query: str, *, limit: int) -> list[SearchResult]:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ProviderError("search backend down")
        return await self.inner.search(query, limit=limit)

    async def aclose(self) -> None:
        return None


class CountingLLM:
    name = "offline"
    model = "offline-analyzer"

    def __init__(
        self, *, fail: bool = False, delay_s: float = 0.0, chunk_delay_s: float = 0.0
    ) -> None:
        self.inner = OfflineAnalyzer()
        self.fail = fail
        self.delay_s = delay_s
        self.chunk_delay_s = chunk_delay_s
        self.calls = 0
        self.active = 0

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncGenerator[str, None]:
        self.calls += 1
        self.active += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail:
                raise ProviderError("llm backend down")
            async for chunk in self.inner.stream(request, usage):
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield chunk
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        return None


def counting_providers(
    *,
    search_fail: bool = False,
    search_delay_s: float = 0.0,
    llm_fail: bool = False,
    llm_delay_s: float = 0.0,
    llm_chunk_delay_s: float = 0.0,
) -> tuple[Providers, CountingSearch, CountingLLM]:
    search = CountingSearch(fail=search_fail, delay_s=search_delay_s)
    llm = CountingLLM(fail=llm_fail, delay_s=llm_delay_s, chunk_delay_s=llm_chunk_delay_s)
    return Providers(search=search, llm=llm), search, llm
