"""A provider call leaves nothing for the cyclic garbage collector: httpx's response and
stream refer to each other, and a cycle left per call piles up in the oldest generation,
whose pauses every stream in flight waits through."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

from app.providers.base import LLMRequest, Message
from app.providers.google_search import GoogleSearch
from app.providers.openai_chat import OpenAIChat
from otel.facade import LLMCallScope
from tests.fake_apis import FakeAPI
from tests.helpers import LiveServerFactory

CALLS = 10


async def cyclic_garbage_per_call(call: Callable[[], Awaitable[None]]) -> float:
    await call()  # connections, caches and lazy imports made once
    gc.collect()
    gc.disable()
    try:
        for _ in range(CALLS):
            await call()
        return gc.collect() / CALLS
    finally:
        gc.enable()


async def test_a_streamed_llm_call_leaves_no_cycle(live_server: LiveServerFactory) -> None:
    async with live_server(FakeAPI().app()) as api:
        llm = OpenAIChat(base_url=f"{api.url}/v1", api_key="sk-test", model="m", timeout_s=5)
        request = LLMRequest(task="t", messages=(Message("user", "hello"),))

        async def call() -> None:
            async for _ in llm.stream(request, LLMCallScope()):
                pass

        try:
            assert await cyclic_garbage_per_call(call) == 0
        finally:
            await llm.aclose()


async def test_a_search_call_leaves_no_cycle(live_server: LiveServerFactory) -> None:
    async with live_server(FakeAPI().app()) as api:
        search = GoogleSearch(
            url=f"{api.url}/customsearch/v1", api_key="g", cse_id="cse", timeout_s=5
        )

        async def call() -> None:
            await search.search("python", limit=3)

        try:
            assert await cyclic_garbage_per_call(call) == 0
        finally:
            await search.aclose()


async def test_llm_calls_reuse_one_connection(live_server: LiveServerFactory) -> None:
    """The body's end after ``[DONE]`` is read, so its connection goes back to the pool
    (unread, httpcore closes it: a new connection and TLS handshake a call)."""
    fake = FakeAPI()
    async with live_server(fake.app()) as api:
        llm = OpenAIChat(base_url=f"{api.url}/v1", api_key="sk-test", model="m", timeout_s=5)
        request = LLMRequest(task="t", messages=(Message("user", "hello"),))
        try:
            for _ in range(3):
                async for _ in llm.stream(request, LLMCallScope()):
                    pass
        finally:
            await llm.aclose()
    assert len({r["client"] for r in fake.requests}) == 1


async def test_a_server_slow_to_end_after_done_is_not_waited_for(
    live_server: LiveServerFactory,
) -> None:
    fake = FakeAPI(after_done_s=30)
    async with live_server(fake.app()) as api:
        llm = OpenAIChat(base_url=f"{api.url}/v1", api_key="sk-test", model="m", timeout_s=60)
        usage = LLMCallScope()
        started = time.monotonic()
        try:
            text = "".join([part async for part in llm.stream(request_of("hello"), usage)])
        finally:
            await llm.aclose()
    assert text == fake.reply
    assert usage.output_tokens == len(fake.reply.split(" "))
    assert time.monotonic() - started < 10  # the end is waited for a second, not 30 s


def request_of(text: str) -> LLMRequest:
    return LLMRequest(task="t", messages=(Message("user", text),))


async def test_a_connection_broken_after_done_fails_nothing() -> None:
    """A server that closes the connection after ``[DONE]`` without ending the chunked
    body: the answer was complete, so the call is too."""
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"done"}}]}\n\ndata: [DONE]\n\n'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        )
        await writer.drain()
        writer.close()  # no terminating chunk

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    llm = OpenAIChat(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", model="m", timeout_s=5)
    try:
        parts = [part async for part in llm.stream(request_of("hello"), LLMCallScope())]
    finally:
        await llm.aclose()
        server.close()
        await server.wait_closed()
    assert parts == ["done"]
