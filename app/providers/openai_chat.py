"""An LLM provider for any OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import httpx

from app.providers.base import LLMRequest, LLMUsage, ProviderError


class OpenAIChat:
    """Streams ``POST {base_url}/chat/completions`` and reads usage from the final chunk."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.http_client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout_s,
            transport=transport,
        )

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncGenerator[str, None]:
        body = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with self.http_client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ProviderError(f"LLM server answered HTTP {response.status_code}")
                async for line in response.aiter_lines():
                    chunk = _parse_sse_line(line)
                    if chunk is None:
                        continue
                    if chunk == "[DONE]":
                        break
                    text = _read_chunk(chunk, usage)
                    if text:
                        yield text
        except httpx.HTTPError as exc:
            # The exception text can carry the URL but never the Authorization header.
            raise ProviderError(f"LLM request failed: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        await self.http_client.aclose()


def _parse_sse_line(line: str) -> dict | str | None:
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return payload
    try:
        return json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ProviderError("LLM server sent a malformed stream chunk") from exc


def _read_chunk(chunk: dict, usage: LLMUsage) -> str:  # type: ignore[type-arg]
    usage.response_model = chunk.get("model") or usage.response_model
    if chunk.get("usage"):
        usage.input_tokens = chunk["usage"].get("prompt_tokens")
        usage.output_tokens = chunk["usage"].get("completion_tokens")
    text = ""
    for choice in chunk.get("choices") or ():
        text += (choice.get("delta") or {}).get("content") or ""
        usage.finish_reason = choice.get("finish_reason") or usage.finish_reason
    return text
