"""The two provider interfaces the pipeline depends on, and the values they exchange."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


@dataclass(slots=True)
class LLMUsage:
    """Filled in by the provider as the stream ends; read by telemetry after the call."""

    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None


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

    def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...
