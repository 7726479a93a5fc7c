"""An LLM provider for any OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from functools import lru_cache
from typing import Any

import httpx
import orjson

from app.providers.asyncio_backend import http_transport
from app.providers.base import LLMRequest, LLMUsage, ProviderError
from app.providers.responses import let_go

#: The longest line of a streamed answer taken (one ``data:`` line is one chunk, a few
#: hundred bytes), and the largest answer that is not streamed: past them the call fails
#: instead of the line or body being held in memory whole.
MAX_LINE_BYTES = 262_144
MAX_BODY_BYTES = 4_194_304
#: What is read after ``[DONE]`` at most, and for how long, to keep the connection.
_END_BYTES = 65_536
_END_WAIT_S = 1.0


#: ``gen_ai.provider.name`` by the API's host, where the GenAI conventions name it.
KNOWN_PROVIDERS = {
    "api.openai.com": "openai",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "api.mistral.ai": "mistral_ai",
    "api.deepseek.com": "deepseek",
    "api.groq.com": "groq",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
}


def provider_name(base_url: str, configured: str | None = None) -> str:
    """What serves the chat completions: the configured name, the conventions' name for a
    known API, or the server's own host and port (a local llama.cpp, Ollama or vLLM)."""
    if configured:
        return configured
    host = httpx.URL(base_url).host
    return KNOWN_PROVIDERS.get(host) or httpx.URL(base_url).netloc.decode() or "openai"


@lru_cache(maxsize=64)  # the stream's every chunk names its model
def short_model_name(model: str) -> str:
    """A model id as a person reads it: llama.cpp's server reports its file's path."""
    name = model.rsplit("/", 1)[-1]
    return name.removesuffix(".gguf") or model


class OpenAIChat:
    """Streams ``POST {base_url}/chat/completions`` and reads usage from the final chunk."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float,
        connect_timeout_s: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str | None = None,
        max_connections: int = 100,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.name = provider_name(base_url, name)
        self.model = model
        self.http_client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            # No read timeout here: a streamed answer's limits (first chunk, gap between
            # chunks, whole answer) are the gateway's, which knows what it is reading.
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s or timeout_s, read=None),
            # httpcore on asyncio's transports: no cancel scope per read of a streamed answer
            # (app/providers/asyncio_backend.py).
            transport=http_transport(max_connections) if transport is None else transport,
        )

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncGenerator[str, None]:
        body = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        response: httpx.Response | None = None
        try:
            async with self.http_client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ProviderError(f"LLM server answered HTTP {response.status_code}")
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    # Some OpenAI-compatible servers ignore `stream: true` and answer one
                    # plain chat.completion: read that form as one chunk.
                    whole = await _read_bounded(response.aiter_bytes(), MAX_BODY_BYTES)
                    yield _read_completion(_json_object(whole), usage)
                    return
                # Undecoded bytes when nothing is to be decoded: one async generator less
                # per chunk than aiter_bytes.
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                received = response.aiter_bytes() if encoded else response.aiter_raw()
                # The lines are split here, not by a generator of their own: a chunk of the
                # answer is a read, a line and an event (`data: {...}`), and each layer of
                # async generators costs every chunk.
                pending = b""
                async for data in received:
                    *lines, pending = (pending + data if pending else data).split(b"\n")
                    if len(pending) > MAX_LINE_BYTES:
                        raise ProviderError(f"LLM server sent a line over {MAX_LINE_BYTES} bytes")
                    for line in lines:
                        if line.startswith(b"data:"):
                            payload = line[5:].strip()
                            if payload == b"[DONE]":
                                await _read_the_end(received)
                                return
                            text = _read_chunk(_json_object(payload), usage)
                            if text:
                                yield text
                if pending.startswith(b"data:"):
                    payload = pending[5:].strip()
                    if payload != b"[DONE]":
                        text = _read_chunk(_json_object(payload), usage)
                        if text:
                            yield text
        except httpx.HTTPError as exc:
            # The exception text can carry the URL but never the Authorization header.
            raise ProviderError(f"LLM request failed: {type(exc).__name__}") from exc
        finally:
            if response is not None:
                let_go(response)

    async def aclose(self) -> None:
        await self.http_client.aclose()


async def _read_the_end(received: AsyncIterator[bytes]) -> None:
    """After ``[DONE]``, the body's last bytes (a blank line, the chunked terminator): read,
    the connection goes back to the pool; left unread, httpcore closes it, and the next
    call pays a new connection (and TLS handshake). A server that keeps sending, stalls or
    breaks the connection after ``[DONE]`` is not waited for and fails nothing: the answer
    is complete, and its connection is closed."""
    left = _END_BYTES
    try:
        async with asyncio.timeout(_END_WAIT_S):
            async for data in received:
                left -= len(data)
                if left < 0:
                    return
    except (TimeoutError, httpx.HTTPError):
        return


async def _read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise ProviderError(f"LLM server sent an answer over {limit} bytes")
    return bytes(body)


def _json_object(payload: bytes) -> dict[str, Any]:
    """orjson, or the standard library for what orjson refuses and JSON allows (an escaped
    lone surrogate, which the events then send escaped)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        value = _stdlib_json(payload)
    if not isinstance(value, dict):
        raise ProviderError("LLM server sent JSON that is not an object")
    return value


def _stdlib_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProviderError("LLM server sent malformed JSON") from exc


def _read_usage(data: dict[str, Any], usage: LLMUsage) -> None:
    model = data.get("model")
    if isinstance(model, str) and model:
        usage.response_model = short_model_name(model)
    counts = data.get("usage")
    if isinstance(counts, dict):
        prompt, completion = counts.get("prompt_tokens"), counts.get("completion_tokens")
        usage.input_tokens = prompt if isinstance(prompt, int) else usage.input_tokens
        usage.output_tokens = completion if isinstance(completion, int) else usage.output_tokens
        details = counts.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if isinstance(cached, int):
            usage.cached_input_tokens = cached  # OpenAI's, and llama.cpp's server's, name


def _choices(data: dict[str, Any]) -> list[dict[str, Any]]:
    choices = data.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _text_of(choice: dict[str, Any], part: str, usage: LLMUsage) -> str:
    reason = choice.get("finish_reason")
    if isinstance(reason, str) and reason:
        usage.finish_reason = reason
    message = choice.get(part)
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _read_chunk(chunk: dict[str, Any], usage: LLMUsage) -> str:
    """One ``chat.completion.chunk`` of a stream: its text, and usage when it has some."""
    _read_usage(chunk, usage)
    choices = chunk.get("choices")
    if type(choices) is list and len(choices) == 1 and type(choices[0]) is dict:
        return _text_of(choices[0], "delta", usage)  # a chunk's usual shape, one choice
    return "".join(_text_of(choice, "delta", usage) for choice in _choices(chunk))


def _read_completion(completion: dict[str, Any], usage: LLMUsage) -> str:
    """A whole ``chat.completion`` (a server that does not stream)."""
    _read_usage(completion, usage)
    return "".join(_text_of(choice, "message", usage) for choice in _choices(completion))
