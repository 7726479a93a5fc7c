"""The one place provider calls go through: breaker, timeout, telemetry, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from contextlib import aclosing
from typing import Any, TypeVar

from app.pipeline.events import PipelineError, StreamErrorCode
from app.providers.base import (
    LLMProvider,
    LLMRequest,
    ProviderError,
    SearchProvider,
    SearchResult,
)
from app.resilience.breaker import CircuitBreaker, CircuitOpenError
from otel.facade import Telemetry

T = TypeVar("T")


async def _all(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that failure."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


class ProviderGateway:
    """Calls the search and LLM providers on behalf of the pipeline."""

    def __init__(
        self,
        *,
        search: SearchProvider,
        llm: LLMProvider,
        breakers: dict[str, CircuitBreaker],
        telemetry: Telemetry,
        timeout_s: float,
    ) -> None:
        self._search = search
        self._llm = llm
        self._breakers = breakers
        self._telemetry = telemetry
        self._timeout_s = timeout_s

    async def search(self, queries: list[str], *, limit: int) -> list[SearchResult]:
        """One round of queries as one guarded call; results de-duplicated by URL."""

        async def call() -> list[SearchResult]:
            with self._telemetry.search_call(
                provider=self._search.name, query_count=len(queries)
            ) as scope:
                async with asyncio.timeout(self._timeout_s):
                    batches = await _all(self._search.search(q, limit=limit) for q in queries)
                unique = {r.url: r for batch in batches for r in batch}
                scope.result_count = len(unique)
                return list(unique.values())

        return await self._guarded("search", "SEARCH_ERROR", call)

    async def complete(
        self, request: LLMRequest, on_chunk: Callable[[str], None] | None = None
    ) -> str:
        """Stream one completion; ``on_chunk`` sees each piece as it arrives."""

        async def call() -> str:
            with self._telemetry.llm_call(
                provider=self._llm.name, model=self._llm.model, input_messages=request.messages
            ) as usage:
                async with asyncio.timeout(self._timeout_s):
                    async with aclosing(self._llm.stream(request, usage)) as chunks:
                        async for chunk in chunks:
                            usage.output_parts.append(chunk)
                            if on_chunk is not None:
                                on_chunk(chunk)
                text = "".join(usage.output_parts)
                if not text.strip():
                    # Never an empty success: a report with nothing in it is a failed call.
                    raise ProviderError("the LLM answered no text")
                return text

        return await self._guarded("llm", "LLM_ERROR", call)

    async def _guarded(
        self, dependency: str, code: StreamErrorCode, call: Callable[[], Coroutine[Any, Any, T]]
    ) -> T:
        breaker = self._breakers[dependency]
        before = breaker.state
        try:
            async with breaker.guard():
                return await call()
        except CircuitOpenError as exc:
            self._telemetry.breaker_rejected(dependency, exc.retry_after_s)
            raise PipelineError(code, str(exc)) from exc
        except TimeoutError as exc:
            raise PipelineError(
                code, f"{dependency} call timed out after {self._timeout_s:g}s"
            ) from exc
        except PipelineError:
            raise
        except ProviderError as exc:
            # Our own words (the providers never put a response body or a URL in them).
            raise PipelineError(code, f"{dependency} provider failed: {exc}") from exc
        except Exception as exc:
            # Anything else may carry text from anywhere: the client gets its kind only.
            raise PipelineError(
                code, f"{dependency} provider failed ({type(exc).__name__})"
            ) from exc
        finally:
            after = breaker.state
            if after != before:
                self._telemetry.breaker_changed(dependency, before.value, after.value)
