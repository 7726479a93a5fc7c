"""The two provider interfaces the pipeline depends on, and the values they exchange."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One hit of a search provider."""

    title: str
    url: str
    snippet: str
    skills: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """A chat request. ``task`` and ``context`` let offline providers work without prompts."""

    task: str
    messages: tuple[Message, ...]
    context: dict[str, object] = field(default_factory=dict)
    max_tokens: int = 800


class LLMUsage(Protocol):
    """What a provider fills in as its stream ends: the telemetry's own record of the call
    (``otel.facade.LLMCallScope``), so nothing is copied from one struct to another."""

    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    finish_reason: str | None


class ProviderError(Exception):
    """A provider call failed (HTTP error, bad payload, injected fault)."""


class SearchProvider(Protocol):
    """Finds public material about a company or role."""

    name: str

    async def search(self, query: str, *, limit: int) -> list[SearchResult]: ...

    async def aclose(self) -> None: ...


class LLMProvider(Protocol):
    """Streams a chat completion; fills ``usage`` before the stream ends."""

    name: str
    model: str

    def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncGenerator[str, None]:
        """An async generator (the caller closes it with ``aclosing`` when it stops early)."""
        ...

    async def aclose(self) -> None: ...
