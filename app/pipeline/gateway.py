"""The one place provider calls go through: breaker, timeout, telemetry, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from contextlib import aclosing
from typing import Any, NamedTuple, Protocol, TypeVar

from app.pipeline.events import PipelineError, StreamErrorCode
from app.providers.base import (
    LLMProvider,
    LLMRequest,
    ProviderError,
    SearchProvider,
    SearchResult,
)
from app.providers.prices import PriceTable
from app.resilience.breaker import CircuitBreaker, CircuitOpenError
from app.resilience.stream_timeouts import StreamLimits, StreamTimeout, stream_timeouts
from otel.facade import LLMCallScope, Telemetry

T = TypeVar("T")

#: ``gen_ai.response.finish_reasons`` of an answer cut at the service's own cap: the value
#: the GenAI conventions (and OpenAI) give an answer that ended at its token limit.
TRUNCATED = "length"


class Answer(NamedTuple):
    text: str
    #: Cut at ``FIT_CHECK_LLM_MAX_ANSWER_CHARS``: the model had more to say.
    truncated: bool


class FlowControl(Protocol):
    """Holds a streamed answer back while its reader is behind (the session)."""

    @property
    def congested(self) -> bool: ...

    async def wait_for_room(self) -> None: ...


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
        llm_limits: StreamLimits | None = None,
        max_answer_chars: int = 32_768,
        prices: PriceTable | None = None,
        on_spend: Callable[[float], None] | None = None,
    ) -> None:
        self._price = (prices or PriceTable.load()).price(llm.model)
        self._on_spend = on_spend
        self._max_answer_chars = max_answer_chars
        #: A streamed answer's limits (first chunk, gap, overall); by default the one
        #: provider timeout for each.
        self._llm_limits = llm_limits or StreamLimits(timeout_s, timeout_s, timeout_s)
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
        self,
        request: LLMRequest,
        on_chunk: Callable[[str], None] | None = None,
        flow: FlowControl | None = None,
    ) -> Answer:
        """Stream one completion; ``on_chunk`` sees each piece as it arrives.

        At most ``max_answer_chars`` of it are taken: past that the provider's stream is
        closed (a closed connection stops the generation, so nothing more is paid for) and
        the answer is marked truncated. While ``flow`` is congested, no more is read.
        """

        async def call() -> Answer:
            scope: LLMCallScope | None = None
            try:
                with self._telemetry.llm_call(
                    provider=self._llm.name,
                    model=self._llm.model,
                    input_messages=request.messages,
                    price=self._price,
                ) as usage:
                    scope = usage
                    answer = await self._stream(request, usage, on_chunk, flow)
                return answer
            finally:
                # Paid for whatever the outcome (the facade priced what was reported).
                if scope is not None and scope.cost_usd and self._on_spend is not None:
                    self._on_spend(scope.cost_usd)

        return await self._guarded("llm", "LLM_ERROR", call)

    async def _stream(
        self,
        request: LLMRequest,
        usage: LLMCallScope,
        on_chunk: Callable[[str], None] | None,
        flow: FlowControl | None,
    ) -> Answer:
        parts = usage.output_parts
        left = self._max_answer_chars
        truncated = False
        async with (
            stream_timeouts(self._llm_limits) as watch,
            aclosing(self._llm.stream(request, usage)) as chunks,
        ):
            async for chunk in chunks:
                watch.chunk()
                usage.chunk()
                if len(chunk) > left:
                    chunk, truncated = chunk[:left], True
                left -= len(chunk)
                parts.append(chunk)
                if on_chunk is not None and chunk:
                    on_chunk(chunk)
                if truncated:
                    usage.finish_reason = TRUNCATED
                    break
                if flow is not None and flow.congested:
                    async with watch.paused():
                        await flow.wait_for_room()
        text = "".join(parts)
        if not text.strip():
            # Never an empty success: a report with nothing in it is a failed call.
            raise ProviderError("the LLM answered no text")
        return Answer(text, truncated)

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
        except StreamTimeout as exc:
            raise PipelineError(code, f"{dependency} call timed out: {exc}") from exc
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
