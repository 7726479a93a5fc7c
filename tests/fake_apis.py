"""Loopback servers that speak third-party APIs: OpenAI chat completions and Google CSE.

They are real HTTP servers (served by uvicorn in the tests), so the providers' HTTP code,
headers and streaming are exercised for real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeAPI:
    """Records what it received; ``status`` and ``delay_s`` inject faults."""

    status: int = 200
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    reply: str = "The engineer looks like a strong fit for the backend role."
    model: str = "fake-gpt-2026-01-01"
    #: False: answer one plain chat.completion, as servers that ignore `stream` do.
    streams: bool = True
    #: Items in each search answer.
    results: int = 1
    #: Pause between streamed chunks: a real model's pace, each chunk arriving alone.
    chunk_gap_s: float = 0.0
    #: (chunks, characters each): a runaway model that streams this instead of ``reply``.
    flood: tuple[int, int] | None = None
    #: Stop sending (and hold the connection open for ``stall_s``) after this many chunks
    #: of ``reply``.
    stall_after: int | None = None
    stall_s: float = 3.0
    #: Prompt tokens the streamed usage reports as read from the prompt cache.
    cached_tokens: int | None = None
    #: False: the stream carries no usage chunk, as some servers' streams do not.
    reports_usage: bool = True
    #: Hold the body open this long after ``data: [DONE]`` (a server slow to end it).
    after_done_s: float = 0.0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/customsearch/v1", self._search, methods=["GET"]),
            ]
        )

    def _record(self, request: Request, body: object) -> None:
        self.requests.append(
            {
                "path": request.url.path,
                "headers": dict(request.headers),
                "query": dict(request.query_params),
                "body": body,
                "client": request.client,
            }
        )

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=self.status)
        assert body["stream"] is True
        if not self.streams:
            return JSONResponse(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self.reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 123, "completion_tokens": 9},
                }
            )
        words = self.reply.split(" ") if self.reply else []
        if self.flood is not None:
            return StreamingResponse(self._flood(*self.flood), media_type="text/event-stream")

        async def chunks() -> AsyncIterator[bytes]:
            for i, word in enumerate(words):
                if self.chunk_gap_s and i:
                    await asyncio.sleep(self.chunk_gap_s)
                if i == self.stall_after:
                    await asyncio.sleep(self.stall_s)  # a provider that stops mid-answer
                delta = {"content": word + ("" if i == len(words) - 1 else " ")}
                yield _sse(
                    {
                        "id": "c1",
                        "model": self.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                )
            yield _sse(
                {
                    "id": "c1",
                    "model": self.model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
            )
            if not self.reports_usage:
                yield b"data: [DONE]\n\n"
                return
            yield _sse(
                {
                    "id": "c1",
                    "model": self.model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 123,
                        "completion_tokens": len(words),
                        **(
                            {"prompt_tokens_details": {"cached_tokens": self.cached_tokens}}
                            if self.cached_tokens is not None
                            else {}
                        ),
                    },
                }
            )
            yield b"data: [DONE]\n\n"
            if self.after_done_s:
                await asyncio.sleep(self.after_done_s)

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def _flood(self, count: int, size: int) -> AsyncIterator[bytes]:
        text = "lorem ipsum " * (size // 12) + "x" * (size % 12)
        chunk = _sse(
            {"id": "c1", "model": self.model, "choices": [{"index": 0, "delta": {"content": text}}]}
        )
        for _ in range(count):
            yield chunk
        yield b"data: [DONE]\n\n"

    async def _search(self, request: Request) -> Response:
        self._record(request, None)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return JSONResponse({"error": {"code": self.status}}, status_code=self.status)
        q = request.query_params["q"]
        return JSONResponse(
            {
                "items": [
                    {
                        "title": f"Acme Corp hiring: Python, Kafka ({q[:20]})",
                        "link": f"https://example.org/acme/{len(self.requests)}/{n}",
                        "snippet": "Acme runs Python on Kubernetes with Kafka and PostgreSQL.",
                    }
                    for n in range(self.results)
                ]
            }
        )


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def provider_settings(
    api_url: str, *, openai_key: str = "sk-test", google_key: str = "g-test"
) -> dict[str, Any]:
    """Settings that point both real providers at a FakeAPI server."""
    return {
        "llm_provider": "openai",
        "openai_base_url": f"{api_url}/v1",
        "openai_api_key": openai_key,
        "search_provider": "google",
        "google_search_url": f"{api_url}/customsearch/v1",
        "google_api_key": google_key,
        "google_cse_id": "cse-1",
    }
