"""Builds the configured providers; the only module that knows every implementation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.config import Settings
from app.providers.base import LLMProvider, SearchProvider
from app.providers.faults import with_faults
from app.providers.google_search import GoogleSearch
from app.providers.offline import OfflineAnalyzer, OfflineSearch
from app.providers.openai_chat import OpenAIChat


@dataclass(slots=True)
class Providers:
    search: SearchProvider
    llm: LLMProvider

    async def aclose(self) -> None:
        await self.search.aclose()
        await self.llm.aclose()


def build_providers(
    settings: Settings, on_http_client: Callable[[httpx.AsyncClient], None] = lambda _c: None
) -> Providers:
    """The configured providers; ``on_http_client`` sees every outbound HTTP client (tracing)."""
    search: SearchProvider
    llm: LLMProvider
    if settings.search_provider == "google":
        search = GoogleSearch(
            url=settings.google_search_url,
            api_key=settings.google_api_key,
            cse_id=settings.google_cse_id,
            timeout_s=settings.provider_timeout_s,
        )
    else:
        search = OfflineSearch()
    if settings.llm_provider == "openai":
        llm = OpenAIChat(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.llm_model,
            timeout_s=settings.provider_timeout_s,
            connect_timeout_s=settings.provider_connect_timeout_s,
            name=settings.llm_provider_name,
            # A streaming session holds one LLM call at a time: room for every session.
            max_connections=settings.max_concurrent_sessions,
        )
    else:
        llm = OfflineAnalyzer()
    for provider in (search, llm):
        client = getattr(provider, "http_client", None)
        if client is not None:
            on_http_client(client)
    search, llm = with_faults(
        search,
        llm,
        latency_ms=settings.latency_ms,
        fault_rate_search=settings.fault_rate_search,
        fault_rate_llm=settings.fault_rate_llm,
        seed=settings.fault_seed,
    )
    return Providers(search=search, llm=llm)
